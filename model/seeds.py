"""Seeds as users type them, made into text the model knows."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from model.corpus import normalize
from model.vocab import Vocab

DEFAULT_OPENING = "En un lugar de la Mancha, "
MAX_SEED_CHARS = 500  # a longer seed keeps its last characters: the GRU state forgets the rest anyway

# Characters the corpus never uses, mapped to the ones it does.
_EQUIVALENTS = {
    "\r\n": "\n", "\r": "\n", "\t": " ", "\u00a0": " ", "\u2014": "\u2013", "\u2026": "...",
    "\u201e": "\u201c", "\u00b4": "'", "`": "'",
}


@dataclass(frozen=True)
class Seed:
    text: str  # what the model reads: only characters of its vocabulary, never empty
    dropped: str  # the distinct characters that were left out, in the order they first appeared
    truncated: bool  # the seed was longer than the limit and only its end was kept
    default: bool  # nothing usable was given: the default opening is used


def clean(raw: str, vocab: Vocab, strip_accents: bool = False, max_chars: int = MAX_SEED_CHARS,
          default: str = DEFAULT_OPENING) -> Seed:
    text = normalize(raw, strip_accents)
    for before, after in _EQUIVALENTS.items():
        text = text.replace(before, after)
    kept, dropped = [], []
    for c in text:
        if c in vocab:
            kept.append(c)
            continue
        # an accented letter the model lacks (â, ç) becomes its base letter when the model has it
        base = "".join(b for b in unicodedata.normalize("NFD", c) if unicodedata.category(b) != "Mn")
        if base and all(b in vocab for b in base):
            kept.append(base)
        elif c not in dropped:
            dropped.append(c)
    text = "".join(kept)
    if not text.strip():
        return Seed(default, "".join(dropped), False, True)
    truncated = len(text) > max_chars
    return Seed(text[-max_chars:] if truncated else text, "".join(dropped), truncated, False)
