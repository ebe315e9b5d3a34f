"""The shared resources, created once: the model, the generation service and the database."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import AsyncIterator

from bot.chat.commands import Commands
from bot.chat.inbox import Inbox
from config import Config
from service.generation import GenerationService, split_by_default
from storage.inbox import Inbox as InboxStore
from storage.repository import Storage


@dataclass
class Runtime:
    config: Config
    service: GenerationService
    storage: Storage
    commands: Commands
    model_id: str
    inbox: Inbox | None = None  # commands stored before they run; each adapter replays it as it starts

    def __post_init__(self):
        if self.inbox is None:
            self.inbox = Inbox(self.commands, InboxStore(self.storage), max_age_s=self.config.telegram.max_delivery_s)


def _choose_device(device: str) -> str:
    """Apply `[model] device`; the device the model will run on, for the log."""
    import tensorflow as tf

    if device == "cpu":
        tf.config.set_visible_devices([], "GPU")
    elif device == "gpu" and not tf.config.list_physical_devices("GPU"):
        raise RuntimeError("[model] device = \"gpu\" but TensorFlow sees no GPU")
    gpus = tf.config.get_visible_devices("GPU")
    return f"GPU ({gpus[0].name})" if gpus else "CPU"


@contextlib.asynccontextmanager
async def open_runtime(config: Config) -> AsyncIterator[Runtime]:
    """Load the model, start the generation worker, open the database; close all on the way out.
    (`serve` then compiles every other batch shape: GenerationService.warm.)"""
    from model import bundle
    from model.sampler import Sampler

    device = _choose_device(config.model.device)
    loaded = bundle.load(config.model.path or None)
    logging.getLogger(__name__).info("model %s (GRU %d) on the %s", loaded.model_id, loaded.hp.rnn_units, device)
    g = config.generation
    service = GenerationService(
        Sampler(loaded.network, loaded.vocab, loaded.lexicon), max_batch=g.max_batch, max_wait_ms=g.max_wait_ms,
        chunk_steps=g.chunk_steps, queue_size=g.queue_size, request_timeout_s=g.request_timeout_s,
        max_seed_chars=config.chat.max_seed_chars, strip_accents=loaded.hp.strip_accents, top_k=g.top_k,
        top_p=g.top_p, words=g.words, split=split_by_default(g.split))
    async with service, await Storage.open(config.storage.database(), keep_days=config.storage.keep_days,
                                          replies_per_chat=config.storage.replies_per_chat) as storage:
        # the program of one lone request now (XLA), rather than in a user's first reply
        await service.generate("En un lugar de la Mancha", length=20)
        commands = Commands(service, storage, config.chat, loaded.model_id)
        yield Runtime(config, service, storage, commands, loaded.model_id)
