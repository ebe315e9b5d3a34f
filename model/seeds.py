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
    # read from the end, up to max_chars known characters: what lies before is not read at all
    kept, dropped = [], {}
    count, truncated = 0, False
    for i in range(len(text) - 1, -1, -1):
        known = _known(text[i], vocab)
        if known is None:
            dropped[text[i]] = i  # its first appearance in what is read, once reading is done
            continue
        if count + len(known) > max_chars:
            truncated = True
            break
        kept.append(known)
        count += len(known)
    text = "".join(reversed(kept))
    unknown = "".join(sorted(dropped, key=dropped.get))
    if not text.strip():
        return Seed(default, unknown, False, True)
    return Seed(text, unknown, truncated, False)


def _known(c: str, vocab: Vocab) -> str | None:
    """The character as the model knows it, or None. An accented letter the model lacks (â, ç)
    becomes its base letter when the model has that."""
    if c in vocab:
        return c
    base = "".join(b for b in unicodedata.normalize("NFD", c) if unicodedata.category(b) != "Mn")
    return base if base and all(b in vocab for b in base) else None
