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
