"""A model folder: weights, vocabulary and hyperparameters together, so it loads with nothing else.

    config.json        hyperparameters (embedding, units, vocabulary size, normalization)
    vocab.json         the characters, id 0 being the unknown one
    model.weights.h5   the network's weights
    lexicon.txt.gz     the training side's words, for the book sampler (optional: without it, only
                       the free sampler; model/lexicon.py)
    MODEL_CARD.md      how it was made and how well it does (written by hand from the metrics)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from model.lexicon import Lexicon
from model.network import CharGRU, Hyperparameters, build
from model.vocab import Vocab

CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.json"
WEIGHTS_FILE = "model.weights.h5"

SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"


class ModelFolderError(Exception):
    """A model folder that is missing or incomplete."""


@dataclass
class Bundle:
    network: CharGRU
    vocab: Vocab
    hp: Hyperparameters
    model_id: str  # identity(): tells stored GRU states of another model apart
    lexicon: Lexicon | None = None  # the training side's words; None: the folder has none


def save(folder: str | Path, network: CharGRU, vocab: Vocab, lexicon: Lexicon | None = None) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(json.dumps(network.hp.to_dict(), indent=1) + "\n")
    vocab.save(folder / VOCAB_FILE)
    network.save_weights(str(folder / WEIGHTS_FILE))
    if lexicon is not None:
        lexicon.save(folder)
    return folder


def identity(folder: Path, hp: Hyperparameters) -> str:
    """What a stored GRU state belongs to: the weights, the vocabulary (which id is which letter)
    and the sizes and normalization the model reads with. Training-only settings (dropout) are left
    out: they do not change what the model computes."""
    digest = hashlib.sha256()
    digest.update((folder / WEIGHTS_FILE).read_bytes())
    digest.update((folder / VOCAB_FILE).read_bytes())
    reading = {k: getattr(hp, k) for k in ("vocab_size", "embedding_dim", "rnn_units", "strip_accents")}
    digest.update(json.dumps(reading, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def load(folder: str | Path | None = None) -> Bundle:
    folder = Path(folder) if folder else SHIPPED_DIR
    missing = [f for f in (CONFIG_FILE, VOCAB_FILE, WEIGHTS_FILE) if not (folder / f).is_file()]
    if missing:
        raise ModelFolderError(f"{folder} is not a model folder: {', '.join(missing)} missing")
    hp = Hyperparameters(**json.loads((folder / CONFIG_FILE).read_text()))
    vocab = Vocab.load(folder / VOCAB_FILE)
    if len(vocab) != hp.vocab_size:
        raise ModelFolderError(f"{folder}: vocab.json has {len(vocab)} ids, config.json says {hp.vocab_size}")
    network = build(hp)
    network.load_weights(str(folder / WEIGHTS_FILE))
    model_id = identity(folder, hp)
    return Bundle(network=network, vocab=vocab, hp=hp, model_id=model_id, lexicon=Lexicon.load(folder))
