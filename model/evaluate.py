"""What `cervantes evaluate` measures: the held-out loss in nats and bits per character, reading the
text as the bot does (state carried), with and without a duplicated block; and samples' quality.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf

from model import quality
from model.network import CharGRU
from model.sampler import Sampler, generate
from model.suffixes import longest_repeat
from model.vocab import Vocab

ROWS = 32  # the held-out text is read as ROWS contiguous streams side by side
CHUNK = 100  # characters per call; the GRU state carries over from one chunk to the next


@dataclass(frozen=True)
class Evaluation:
    nats_per_char: float
    characters: int

    @property
    def bits_per_char(self) -> float:
        return self.nats_per_char / math.log(2)

    def to_dict(self) -> dict:
        return {
            "nats_per_char": round(self.nats_per_char, 4),
            "bits_per_char": round(self.bits_per_char, 4),
            "characters": self.characters,
        }


_compiled: "weakref.WeakKeyDictionary[CharGRU, object]" = weakref.WeakKeyDictionary()


def _chunk_loss_fn(network: CharGRU):
    """One compiled function per network, traced once: (x, y, state) -> (summed loss, state)."""
    if network in _compiled:
        return _compiled[network]

    @tf.function(input_signature=[
        tf.TensorSpec([None, None], tf.int32),
        tf.TensorSpec([None, None], tf.int32),
        tf.TensorSpec([None, network.hp.rnn_units], tf.float32),
    ])
    def chunk_loss(x, y, state):
        logits, state = network(x, state=state, training=False)
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
        return tf.reduce_sum(tf.cast(losses, tf.float64)), state

    _compiled[network] = chunk_loss
    return chunk_loss


def held_out_loss(network: CharGRU, ids: np.ndarray, rows: int = ROWS, chunk: int = CHUNK) -> Evaluation:
    """Mean cross-entropy of predicting ids[1:] from ids[:-1].

    The text is split into `rows` contiguous streams; each is read in chunks with its GRU state
    carried, so only the first characters of each stream are predicted without context.
    """
    rows = max(1, min(rows, (len(ids) - 1) // 2))
    per_row = (len(ids) - 1) // rows
    inputs = ids[: rows * per_row].reshape(rows, per_row)  # [rows, per_row]
    targets = ids[1 : rows * per_row + 1].reshape(rows, per_row)

    chunk_loss = _chunk_loss_fn(network)
    total = 0.0
    state = tf.zeros([rows, network.hp.rnn_units])
    for start in range(0, per_row, chunk):
        x = tf.constant(inputs[:, start : start + chunk])
        y = tf.constant(targets[:, start : start + chunk])
        loss, state = chunk_loss(x, y, state)
        total += float(loss)
    count = rows * per_row
    return Evaluation(nats_per_char=total / count, characters=count)


# Both copies of a block written twice are scored the same by a fixed model, but anything that adapts
# while it reads gains on the second. The held-out part's longest repeat otherwise is 51 characters.
MIN_DUPLICATE_CHARS = 1000


def duplicate(text: str, min_chars: int = MIN_DUPLICATE_CHARS) -> tuple[int, int] | None:
    """[start, end) of the later copy of the longest stretch `text` holds twice, if it is at least
    `min_chars` long. Copies back to back may overlap where the block ends as the next one starts
    ("\\nCapítulo 49" then "\\nCapítulo 50"): only one period is left out then, so that what remains
    reads as if the block were written once."""
    first, second, length = longest_repeat(text)
    if length < min_chars:
        return None
    return second, second + min(length, second - first)


def without_duplicates(text: str, min_chars: int = MIN_DUPLICATE_CHARS) -> tuple[str, list[tuple[int, int]]]:
    """`text` with the later copy of every duplicated block left out, and the spans left out (in
    offsets of the `text` given)."""
    original = np.arange(len(text))  # where each remaining character stood in the text given
    spans = []
    while span := duplicate(text, min_chars):
        start, end = span
        spans.append((int(original[start]), int(original[end - 1]) + 1))
        text, original = text[:start] + text[end:], np.concatenate([original[:start], original[end:]])
    return text, sorted(spans)


def held_out_figures(network: CharGRU, vocab: Vocab, held_out: str) -> dict:
    """The held-out loss of the whole text, and under "dedup" without the later copies of duplicated
    blocks (read again as one text; the same figures when there are none)."""
    full = held_out_loss(network, vocab.encode(held_out))
    deduped, spans = without_duplicates(held_out)
    dedup = held_out_loss(network, vocab.encode(deduped)) if spans else full
    return {**full.to_dict(), "dedup": {**dedup.to_dict(), "left_out": [list(s) for s in spans]}}


def summary(figures: dict, report: "SampleReport | None" = None) -> str:
    """held_out_figures (and a sample report) as `cervantes evaluate` prints them."""
    copies = ", ".join(f"{a} to {b}" for a, b in figures["dedup"]["left_out"]) or "none"
    lines = [f"{name} loss over {f['characters']} characters: {f['nats_per_char']:.4f} nats/char, "
             f"{f['bits_per_char']:.4f} bits/char"
             for name, f in (("held-out", figures), ("dedup", figures["dedup"]))]
    lines.append(f"(dedup leaves out the second copy of a duplicated block, held-out characters: {copies})")
    return "\n".join(lines) + ("\n\n" + report.table() if report else "")


# samples -----------------------------------------------------------------------------------------

SEED_CHARS = 100  # a seed is about this long: enough for the GRU state to settle


@dataclass(frozen=True)
class Setting:
    temperature: float
    top_k: int = 0  # 0: all characters
    top_p: float = 1.0  # 1: no nucleus
    words: str = "free"  # "book": only the words of the sampler's lexicon

    @property
    def label(self) -> str:
        return ("book " if self.words == "book" else "") + f"{self.temperature:g}" + (
            f", top-k {self.top_k}" if self.top_k else "") + (f", top-p {self.top_p:g}" if self.top_p < 1 else "")


def settings(temperatures: list[float], top_ks: list[int] = (), top_ps: list[float] = (),
             words: list[str] = ("free",)) -> list[Setting]:
    """For each of `words` in turn: every temperature sampled plainly, then again with each top-k > 0
    and each top-p < 1."""
    if not temperatures or any(t < 0 for t in temperatures):
        raise ValueError("temperatures must be at least 0")
    if any(k < 0 for k in top_ks) or any(not 0 < p <= 1 for p in top_ps):
        raise ValueError("top-k must be at least 0 and top-p in (0, 1]")
    if not words or any(w not in ("free", "book") for w in words):
        raise ValueError("words must be free or book")
    return [s for w in words for s in
            [Setting(t, words=w) for t in temperatures]
            + [Setting(t, top_k=k, words=w) for k in top_ks if k > 0 for t in temperatures]
            + [Setting(t, top_p=p, words=w) for p in top_ps if p < 1 for t in temperatures]]


def stretches(text: str, n: int, chars: int, random_seed: int = 0) -> list[str]:
    """`n` stretches of `text` of `chars` characters, each starting a word, one at a random place in
    each n-th part of the text: spread over all of it, and apart where the parts are long enough."""
    rng = np.random.default_rng(random_seed)
    part = len(text) // max(n, 1)
    out = []
    for i in range(n):
        start = i * part + int(rng.integers(0, max(1, part - chars - 50)))  # 50: room to a space
        start = text.find(" ", start) + 1  # 0 when there is no space: the text's start
        out.append(text[start : start + chars])
    return out


def seeds_from(text: str, n: int, chars: int = SEED_CHARS, random_seed: int = 0) -> list[str]:
    """`n` seeds from `text`, each about `chars` long and ending after a space, so that a sample starts
    a word of its own."""
    seeds = []
    for s in stretches(text, n, 2 * chars, random_seed):
        cut = s.find(" ", chars)
        seeds.append(s[: cut + 1] if cut >= 0 else s)
    return seeds


@dataclass
class SampleReport:
    length: int
    seeds: list[str]
    rows: list[tuple[str, quality.Figures]] = field(default_factory=list)  # (label, figures)
    samples: dict[str, list[str]] = field(default_factory=dict)  # label -> one text per seed

    def table(self) -> str:
        n = len(self.seeds)
        return (quality.table(self.rows) + "\n\n"
                f"{n} samples of {self.length} characters per row, continuing the same {n} seeds (stretches "
                f"of the training text); \"held-out text\": {n} stretches of {self.length} characters of the "
                "held-out part without its duplicated block, for reference; \"book\": only the words of "
                "the model's lexicon. Known words: share of the words that the training text uses. "
                "Attested word pairs: share of adjacent word pairs that the training text has too. "
                "Distinct word 3-grams: within each sample, pooled over the "
                "row (it falls as rows grow: compare rows of one table). Longest copy: characters found "
                "verbatim in the training text. Loops: samples that write a "
                f"{quality.LOOP_CHARS}-character stretch {quality.LOOP_TIMES} times or more. Word drift: "
                "Jensen-Shannon divergence of the word frequencies from the training text's. "
                f"Over-represented: among words at least {100 * quality.FREQUENT_SHARE:g}% of the row's, "
                "the highest ratio to its rate in the training text.")

    def to_dict(self) -> dict:
        return {"length": self.length, "seeds": len(self.seeds),
                "rows": [{"sampling": label, **f.to_dict()} for label, f in self.rows]}

    def write(self, path: str | Path) -> None:
        """The samples as plain text, each after its seed's last words."""
        with open(path, "w", encoding="utf-8") as out:
            for label, texts in self.samples.items():
                for i, (seed, text) in enumerate(zip(self.seeds, texts), 1):
                    out.write(f"--- {label}, sample {i} ---\n[…{seed[-40:]}]{text}\n\n")


def sample_report(sampler: Sampler, training: str | list[str], held_out: str, runs: list[Setting], n: int,
                  length: int, random_seed: int = 0) -> SampleReport:
    """`n` samples of `length` characters per setting, continuing the same `n` seeds from the training
    text (one batched call per top-k, top-p and words), measured against the training text (several:
    the first gives the seeds, all are the book); first, for reference, `n` stretches of the
    held-out text (without its duplicated block) measured the same way."""
    texts = [training] if isinstance(training, str) else list(training)
    book = quality.Book(texts)
    report = SampleReport(length, seeds_from(texts[0], n, random_seed=random_seed))
    reference = stretches(without_duplicates(held_out)[0], n, length, random_seed)
    report.rows.append(("held-out text", quality.measure(reference, book)))
    for top_k, top_p, words in dict.fromkeys((s.top_k, s.top_p, s.words) for s in runs):
        group = [s for s in runs if (s.top_k, s.top_p, s.words) == (top_k, top_p, words)]
        temperatures = [s.temperature for s in group for _ in report.seeds]
        texts = [g.text for g in generate(sampler, report.seeds * len(group), length, temperatures,
                                          random_seed=random_seed, top_k=top_k, top_p=top_p, words=words)]
        for i, s in enumerate(group):
            report.samples[s.label] = texts[i * n : (i + 1) * n]
    for s in runs:
        report.rows.append((s.label, quality.measure(report.samples[s.label], book)))
    return report
