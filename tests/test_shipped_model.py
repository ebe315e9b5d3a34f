"""The model shipped in model/shipped: loads with nothing else, and is as good as its card says."""

from __future__ import annotations

import json

import pytest

from model import bundle, corpus
from model.evaluate import held_out_loss

EVALUATION = bundle.SHIPPED_DIR / "evaluation.json"


@pytest.fixture(scope="module")
def shipped():
    return bundle.load()  # no corpus, no other file


@pytest.fixture(scope="module")
def card_figures() -> dict:
    return json.loads(EVALUATION.read_text())


def test_loads_with_the_notebook_architecture(shipped):
    assert (shipped.hp.embedding_dim, shipped.hp.rnn_units) == (128, 512)
    assert shipped.hp.strip_accents is False and len(shipped.vocab) == 97  # NFC: 96 characters + unknown
    assert "ñ" in shipped.vocab


def test_held_out_slice_matches_the_card(shipped, card_figures, corpus_path):
    assert corpus.sha256_of(corpus_path) == card_figures["corpus_sha256"]
    _, held_out = corpus.split(corpus.read(corpus_path))
    figures = card_figures["slice"]
    measured = held_out_loss(shipped.network, shipped.vocab.encode(held_out[: figures["limit"]]))
    assert measured.nats_per_char == pytest.approx(figures["nats_per_char"], abs=0.002)


def test_card_states_the_figures(card_figures):
    card = (bundle.SHIPPED_DIR / "MODEL_CARD.md").read_text()
    full = card_figures["held_out"]
    assert f"{full['bits_per_char']:.3f}" in card and f"{full['nats_per_char']:.3f}" in card
    assert card_figures["corpus_sha256"] in card
    assert full["bits_per_char"] < 1.93  # better than xz -9e on the same held-out text


def test_the_shipped_lexicon_is_every_word_of_the_training_side_of_both_parts(shipped, corpus_path):
    from model.lexicon import Lexicon

    second = corpus_path.parent / "quijote_parte2.txt"
    if not second.exists():
        pytest.skip(f"second part not found at {second}")
    training, held_out = corpus.split(corpus.read(corpus_path))
    rebuilt = Lexicon.from_texts([training, corpus.read(second)], shipped.vocab)
    assert shipped.lexicon.words == rebuilt.words and len(rebuilt) > 20_000
    assert "sancho" in shipped.lexicon and "vuestra" in shipped.lexicon and "avimismo" not in shipped.lexicon


def test_the_shipped_lexicon_is_small_and_written_as_the_book_sampler_needs(shipped):
    from model.lexicon import LEXICON_FILE

    assert (bundle.SHIPPED_DIR / LEXICON_FILE).stat().st_size < 100_000  # committed with the model
    assert shipped.lexicon is not None and len(shipped.lexicon) > 20_000
