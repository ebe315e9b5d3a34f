"""Sample quality: what a reader notices in generated text, measured against the book.

Pure functions of strings. A sample is judged on its own characters (never its seed's), against the
training text: are its words the book's words, are its neighbouring words ones the book puts side by
side, does it say something new or go round in circles, does it copy the book, and does it lean on a
few words far more than the book does.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter
from dataclasses import asdict, dataclass

from model.suffixes import Index

_WORD = re.compile(r"[^\W\d_]+")  # a run of letters, accented ones and ñ included
LOOP_CHARS = 20  # a loop: a stretch of at least this many characters ...
LOOP_TIMES = 3  # ... written this many times or more in one sample, the copies not overlapping
FREQUENT_SHARE = 0.005  # words at least this share of a setting's words are "frequent"
FREQUENT_COUNT = 3  # and at least this many times


def is_letter(c: str) -> bool:
    """Characters (one or more) that words are made of, and only those."""
    return _WORD.fullmatch(c) is not None


def words(text: str) -> list[str]:
    """Lower-case words. A word the text ends inside is left out: the sample stopped there, not the writer."""
    found = _WORD.findall(text.lower())
    if found and _WORD.fullmatch(text[-1:]):
        found.pop()
    return found


def known_share(sample_words: list[str], vocabulary: set[str] | frozenset[str]) -> float:
    """The share of the words that the book uses too (1.0 when there are none)."""
    if not sample_words:
        return 1.0
    return sum(w in vocabulary for w in sample_words) / len(sample_words)


def pairs(text_words: list[str]) -> list[tuple[str, str]]:
    """Adjacent word pairs, in order (across punctuation: "dijo. Sancho" is ("dijo", "sancho"))."""
    return list(zip(text_words, text_words[1:]))


def attested_share(texts_words: list[list[str]], book_pairs: set | frozenset) -> float:
    """The share of adjacent word pairs, within each text, that the book has too (1.0 when there
    are none): a measure of word order, where known words measure spelling."""
    found = [p for ws in texts_words for p in pairs(ws)]
    return sum(p in book_pairs for p in found) / len(found) if found else 1.0


def distinct_trigrams(texts_words: list[list[str]]) -> float:
    """Distinct word 3-grams over all 3-grams, each text's counted within it, then pooled: 1.0 when
    nothing is said twice (1.0 when there are none)."""
    grams = [tuple(ws[i : i + 3]) for ws in texts_words for i in range(len(ws) - 2)]
    return len(set(grams)) / len(grams) if grams else 1.0


def loop(text: str, min_chars: int = LOOP_CHARS, times: int = LOOP_TIMES) -> str | None:
    """A stretch of `min_chars` characters that `text` writes `times` times or more without the
    copies overlapping, or None. (A longer repeated stretch repeats its first `min_chars` too.)"""
    starts: dict[str, list[int]] = {}
    for i in range(len(text) - min_chars + 1):
        starts.setdefault(text[i : i + min_chars], []).append(i)
    for piece, at in starts.items():
        if len(at) < times:
            continue
        count, free_from = 0, 0
        for i in at:
            if i >= free_from:
                count, free_from = count + 1, i + min_chars
        if count >= times:
            return piece
    return None


def js_divergence(a: Counter, b: Counter) -> float:
    """Jensen-Shannon divergence of two word distributions, in bits: 0 for the same, 1 for disjoint."""
    total_a, total_b = sum(a.values()), sum(b.values())
    if not total_a or not total_b:
        return 0.0
    bits = 0.0
    for w in a.keys() | b.keys():
        p, q = a[w] / total_a, b[w] / total_b
        m = (p + q) / 2
        bits += (p * math.log2(p / m) if p else 0.0) + (q * math.log2(q / m) if q else 0.0)
    return bits / 2


@dataclass(frozen=True)
class Overuse:
    word: str
    share: float  # of the sample's words
    ratio: float  # share / the word's share in the book, the book's count taken + 1 (new words too)


def most_overused(sample: Counter, book: Counter, min_share: float = FREQUENT_SHARE,
                  min_count: int = FREQUENT_COUNT) -> Overuse | None:
    """Among the sample's frequent words, the one most over-represented against the book."""
    total, book_total = sum(sample.values()), sum(book.values())
    best = None
    for w, n in sample.items():
        share = n / total
        if n < min_count or share < min_share:
            continue
        ratio = share / ((book[w] + 1) / book_total)
        if best is None or ratio > best.ratio:
            best = Overuse(w, share, ratio)
    return best


class Book:
    """The training text as the samples are measured against it: its words, its adjacent word
    pairs and its suffixes. Several texts (both parts of the novel) are each read on their own."""

    def __init__(self, text: str | list[str]):
        texts = [text] if isinstance(text, str) else list(text)
        texts_words = [words(t) for t in texts]
        self.counts = Counter(w for ws in texts_words for w in ws)
        self.vocabulary = frozenset(self.counts)
        self.pairs = frozenset(p for ws in texts_words for p in pairs(ws))
        self.index = Index("\n".join(texts))


@dataclass(frozen=True)
class Figures:
    samples: int
    words: int  # in all samples together
    known_words: float  # share of the words that the book uses too
    attested_pairs: float  # share of the adjacent word pairs that the book has too
    distinct_3grams: float  # distinct word 3-grams / all, within samples, pooled
    longest_copy: int  # characters: the longest stretch of any sample found verbatim in the book
    median_copy: float  # characters: the median over samples of each one's longest such stretch
    copied: str  # that longest stretch
    loops: float  # share of samples with a loop (LOOP_CHARS characters LOOP_TIMES times or more)
    js_bits: float  # Jensen-Shannon divergence of the samples' word frequencies from the book's
    overused: Overuse | None  # the frequent word most over-represented against the book

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("known_words", "attested_pairs", "distinct_3grams", "loops", "js_bits", "median_copy"):
            d[key] = round(d[key], 4)
        if self.overused:
            d["overused"] = {"word": self.overused.word, "share": round(self.overused.share, 4),
                             "ratio": round(self.overused.ratio, 1)}
        return d


def measure(texts: list[str], book: Book) -> Figures:
    """Every figure for a set of samples (the generated characters only, without their seeds)."""
    texts_words = [words(t) for t in texts]
    all_words = [w for ws in texts_words for w in ws]
    copies = [book.index.longest_copy(t) for t in texts]
    longest = max(range(len(texts)), key=lambda i: copies[i][1], default=None)
    counts = Counter(all_words)
    return Figures(
        samples=len(texts),
        words=len(all_words),
        known_words=known_share(all_words, book.vocabulary),
        attested_pairs=attested_share(texts_words, book.pairs),
        distinct_3grams=distinct_trigrams(texts_words),
        longest_copy=copies[longest][1] if texts else 0,
        median_copy=statistics.median(c[1] for c in copies) if texts else 0.0,
        copied=texts[longest][copies[longest][0] : sum(copies[longest])] if texts else "",
        loops=sum(loop(t) is not None for t in texts) / len(texts) if texts else 0.0,
        js_bits=js_divergence(counts, book.counts),
        overused=most_overused(counts, book.counts),
    )


def table(rows: list[tuple[str, Figures]]) -> str:
    """A Markdown table, one row per (label, figures)."""
    lines = [
        "| sampling | known words | attested word pairs | distinct word 3-grams "
        "| longest copy, max (median) | loops | word drift (JS, bits) | most over-represented word |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for label, f in rows:
        over = (f"{f.overused.word} {100 * f.overused.share:.1f}%, {f.overused.ratio:.0f}×"
                if f.overused else "–")
        lines.append(
            f"| {label} | {100 * f.known_words:.1f}% | {100 * f.attested_pairs:.1f}% | {f.distinct_3grams:.3f} "
            f"| {f.longest_copy} ({f.median_copy:g}) | {round(f.loops * f.samples)}/{f.samples} "
            f"| {f.js_bits:.3f} | {over} |")
    return "\n".join(lines)
