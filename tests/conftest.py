"""Shared fixtures: the corpus from ../shared, a tiny deterministic model, a sampler over it."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "data" / "el_quijote.txt"

TINY_TEXT = (
    "En un lugar de la Mancha, de cuyo nombre no quiero acordarme, no ha mucho tiempo que vivía "
    "un hidalgo de los de lanza en astillero, adarga antigua, rocín flaco y galgo corredor. "
    "¿Qué gigantes? dijo Sancho Panza. «Aquellos que allí ves», respondió su amo.\n"
)


@pytest.fixture(scope="session")
def corpus_path() -> Path:
    if not CORPUS.exists():
        pytest.skip(f"corpus not found at {CORPUS}")
    return CORPUS


@pytest.fixture(scope="session")
def tiny_vocab():
    from model.vocab import Vocab

    return Vocab.from_text(TINY_TEXT)


@pytest.fixture(scope="session")
def tiny_network(tiny_vocab):
    """A small GRU with fixed random weights: deterministic, untrained, quick."""
    import tensorflow as tf

    from model.network import Hyperparameters, build

    tf.keras.utils.set_random_seed(1234)
    return build(Hyperparameters(len(tiny_vocab), embedding_dim=8, rnn_units=16))


@pytest.fixture(scope="session")
def tiny_sampler(tiny_network, tiny_vocab):
    from model.sampler import Sampler

    return Sampler(tiny_network, tiny_vocab)


@pytest.fixture(scope="session")
def tiny_lexicon():
    """The words of TINY_TEXT: what the tiny model may write with words = "book"."""
    from model.lexicon import Lexicon

    return Lexicon.from_texts([TINY_TEXT])


@pytest.fixture(scope="session")
def tiny_book_sampler(tiny_network, tiny_vocab, tiny_lexicon):
    """The tiny model's sampler with the lexicon of TINY_TEXT: it can write "free" or "book"."""
    from model.sampler import Sampler

    return Sampler(tiny_network, tiny_vocab, tiny_lexicon)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_network, tiny_vocab, tiny_lexicon) -> Path:
    """The tiny model saved as a model folder (with the words of TINY_TEXT), as `cervantes`
    commands load one."""
    from model import bundle

    return bundle.save(tmp_path_factory.mktemp("tiny-model"), tiny_network, tiny_vocab, tiny_lexicon)


class Clock:
    """A monotonic clock that moves only when a test sets `now`."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


TELEGRAM_BOT_USERNAME = "CervantesTestBot"


@pytest.fixture(scope="session")
def emulator():
    """The Telegram emulator (tests/telegram_emulator) on a free local port, for the whole run."""
    from telegram_emulator.emulator import missing, running

    if reason := missing():
        pytest.skip(reason)
    with running(TELEGRAM_BOT_USERNAME) as url:
        yield url


@pytest.fixture
def token() -> str:
    """A fresh bot token per test, so that the emulator keeps each test's chats apart."""
    import secrets

    return f"{secrets.randbelow(10**9) + 10**9}:TEST{secrets.token_urlsafe(27)}"


@pytest.fixture
async def peer(emulator, token):
    """The users' side of the emulator, for this test's bot."""
    from telegram_emulator.peer import Peer

    peer = Peer(emulator, token)
    yield peer
    await peer.http.aclose()


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server for the whole run (tests/pg.py). Tests that need it FAIL when
    PostgreSQL is not installed: the storage promises are made for both stores."""
    import pg

    if reason := pg.missing():
        pytest.fail(reason)
    server = pg.Server().start()
    yield server
    server.stop()


@pytest.fixture
def pg_url(postgres_server) -> str:
    """A fresh, empty database on that server, for this test; its URL (as the admin, no password).
    Dropped afterwards: each holds about 8 MB on disk."""
    url = postgres_server.new_database()
    yield url
    postgres_server.drop_database(url)
