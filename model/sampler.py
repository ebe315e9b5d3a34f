"""The stepwise sampler: prime a batch of seeds, then sample N characters in one compiled call.

The GRU cell is written out over the trained weights so that one step is one matrix product:
the input half of the cell is a table lookup (embedding @ kernel + bias, precomputed per character),
and the new state is multiplied once by [recurrent kernel | output kernel], [units, 3 * units +
vocab], which gives the logits of this step and the recurrent half of the next. Each row carries
its own temperature, random seed and position, so a row's text depends only on its own inputs,
never on which other rows share the batch.

Each row also carries a word state (model/lexicon.py): with the book's words ("book") a character
that would start or extend a word the book never uses is masked, one gather from the lexicon's
transition table per step; OFF ("free") allows every character. Both are the same compiled program.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from model import lexicon as lex
from model.lexicon import Lexicon
from model.network import CharGRU
from model.vocab import UNK_ID, Vocab

WORDS = ("free", "book")  # every character; only the words of the book (the sampler's lexicon)

_HASH_MUL_1 = 0x7FEB352D
_HASH_MUL_2 = 0x846CA68B


def _uniform(seeds, positions, vocab_size):
    """Counter-based uniform noise in (0, 1): [batch, vocab] from row seeds [batch] and positions [batch].

    A 32-bit integer hash (lowbias32) of (seed, position, character): reproducible, independent
    across rows, and it needs no random-generator state to carry between calls.
    """
    v = tf.cast(tf.range(vocab_size), tf.uint32)[None, :]
    x = (tf.cast(seeds, tf.uint32)[:, None] * tf.constant(0x9E3779B1, tf.uint32)
         + tf.cast(positions, tf.uint32)[:, None] * tf.constant(0x85EBCA77, tf.uint32)
         + v * tf.constant(0xC2B2AE3D, tf.uint32))
    for mul in (_HASH_MUL_1, _HASH_MUL_2):
        x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, tf.uint32)))
        x = x * tf.constant(mul, tf.uint32)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, tf.uint32)))
    top24 = tf.bitwise.right_shift(x, tf.constant(8, tf.uint32))
    return (tf.cast(top24, tf.float32) + 0.5) / 16777216.0


def choose(logits, temperatures, seeds, positions, top_k=0, top_p=1.0):
    """Next ids [batch] from logits [batch, vocab]: the unknown id never; temperature 0 is greedy;
    otherwise a Gumbel-max draw from softmax(logits / temperature), restricted to the top k if k > 0
    and to the nucleus if top_p < 1: the fewest likeliest characters whose probabilities (at the
    row's temperature) add up to top_p."""
    vocab_size = tf.shape(logits)[1]
    never = tf.constant(-1e9, logits.dtype)
    logits = tf.where(tf.range(vocab_size)[None, :] == UNK_ID, never, logits)
    top_k = tf.convert_to_tensor(top_k, tf.int32)
    top_p = tf.convert_to_tensor(top_p, logits.dtype)
    safe_t = tf.maximum(temperatures, 1e-6)[:, None]

    def keep_top_k():
        kth = tf.math.top_k(logits, k=tf.clip_by_value(top_k, 1, vocab_size)).values[:, -1:]  # [batch, 1]
        return tf.where(logits < kth, never, logits)

    def keep_nucleus():
        ranked = tf.sort(logits / safe_t, direction="DESCENDING")  # [batch, vocab]
        before = tf.cumsum(tf.nn.softmax(ranked), axis=-1, exclusive=True)  # mass of the likelier ones
        # the likeliest is always kept (before = 0); the last one kept is the first to reach top_p
        cutoff = tf.reduce_min(tf.where(before < top_p, ranked, ranked[:, :1]), axis=-1, keepdims=True)
        return tf.where(logits / safe_t < cutoff, never, logits)

    # no sort per step unless asked for
    logits = tf.cond(top_k > 0, keep_top_k, lambda: logits)
    logits = tf.cond(top_p < 1.0, keep_nucleus, lambda: logits)
    gumbel = -tf.math.log(-tf.math.log(_uniform(seeds, positions, vocab_size)))
    noisy = tf.where(temperatures[:, None] > 0, logits / safe_t + gumbel, logits)
    return tf.argmax(noisy, axis=-1, output_type=tf.int32)


class Sampler:
    """prime(ids, lengths, state) -> state; sample(last, state, ...) -> (ids, state, last, word states).

    With a `lexicon`, rows can be held to the book's words (`word_states(texts, "book")`)."""

    def __init__(self, network: CharGRU, vocab: Vocab, lexicon: Lexicon | None = None):
        self.vocab = vocab
        self.lexicon = lexicon
        self.units = network.hp.rnn_units
        self.vocab_size = network.hp.vocab_size
        cell = network.gru.cell
        emb = tf.convert_to_tensor(network.embedding.embeddings)
        bias = tf.convert_to_tensor(cell.bias)  # [2, 3 * units]: input bias, recurrent bias
        self.input_table = tf.constant(emb @ tf.convert_to_tensor(cell.kernel) + bias[0])  # [vocab, 3u]
        self.recurrent_kernel = tf.constant(cell.recurrent_kernel)  # [units, 3u]
        self.recurrent_bias = tf.constant(bias[1])  # [3u]
        self.out_bias = tf.constant(network.dense.bias)  # [vocab]
        self.both_kernels = tf.constant(tf.concat(  # [units, 3u + vocab]: one product per step
            [self.recurrent_kernel, tf.convert_to_tensor(network.dense.kernel)], axis=1))
        # [word states, vocab]: the word state after each character, -1 where it is not allowed
        off = np.where(np.arange(len(vocab)) == UNK_ID, lex.NOT_ALLOWED, lex.OFF).astype(np.int32)[None]
        self.word_table = tf.constant(lexicon.table(vocab) if lexicon is not None else off)
        u = self.units
        self._prime = tf.function(self._prime_impl, jit_compile=True, input_signature=[
            tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None], tf.int32),
            tf.TensorSpec([None, u], tf.float32)])
        # the one concrete function (input_signature), called directly: a call costs about 2 ms
        # less than through tf.function's dispatch, which matters with many short chunks
        self._sample = tf.function(self._sample_impl, jit_compile=True, input_signature=[
            tf.TensorSpec([None], tf.int32), tf.TensorSpec([None, u], tf.float32), tf.TensorSpec([None], tf.int32),
            tf.TensorSpec([None], tf.float32), tf.TensorSpec([None], tf.int64), tf.TensorSpec([None], tf.int32),
            tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None], tf.int32), tf.TensorSpec([], tf.int32),
            tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.float32),
            tf.TensorSpec([None], tf.int32)]).get_concrete_function()

    def _cell(self, ids, h, hr):
        """One GRU step (Keras GRU, reset_after): ids [batch], h [batch, units] and its recurrent
        half hr = h @ recurrent_kernel + recurrent_bias [batch, 3 * units] -> the next h."""
        x_z, x_r, x_h = tf.split(tf.gather(self.input_table, ids), 3, axis=-1)
        h_z, h_r, h_h = tf.split(hr, 3, axis=-1)
        z = tf.sigmoid(x_z + h_z)
        r = tf.sigmoid(x_r + h_r)
        return z * h + (1.0 - z) * tf.tanh(x_h + r * h_h)

    def _recurrent(self, h):
        return h @ self.recurrent_kernel + self.recurrent_bias

    def _prime_impl(self, ids, lengths, h):
        # ids [batch, time], right-padded; a row's state stops changing after its own length, and
        # the loop stops at the longest row, whatever the padding. A while loop on a counter: a
        # tf.range over a computed bound would make XLA compile again for every new set of lengths.
        longest = tf.reduce_max(lengths)
        t = tf.constant(0)
        while t < longest:
            h_next = self._cell(ids[:, t], h, self._recurrent(h))
            h = tf.where((t < lengths)[:, None], h_next, h)
            t += 1
        return h

    def _sample_impl(self, last, h, words, temperatures, seeds, positions, forced, forced_len, capacity,
                     steps, top_k, top_p, steps_left):
        # Each row first reads its forced ids (the rest of a seed: forced [batch, width], right-padded,
        # forced_len [batch]), then samples up to steps_left [batch] characters; the loop runs `steps`
        # times, and a row whose own count ends sooner keeps its state, last id and word state from
        # then on. The shapes are the batch, the forced width and the output's `capacity` (>= steps):
        # `steps` is only a loop bound, so any chunk length runs in the same compiled program.
        # words [batch]: each row's word state after its seed or `last` (lexicon.py).
        out = tf.TensorArray(tf.int32, size=capacity)
        split = [3 * self.units, self.vocab_size]
        last_column = tf.shape(forced)[1] - 1
        hr = self._recurrent(h)
        t = tf.constant(0)
        while t < steps:
            forcing = t < forced_len
            going = t < forced_len + steps_left
            writing = tf.logical_and(going, tf.logical_not(forcing))
            h_next = self._cell(last, h, hr)
            hr_next, logits = tf.split(h_next @ self.both_kernels, split, axis=-1)
            after = tf.gather(self.word_table, words)  # [batch, vocab]: the word state after each id
            logits = tf.where(after >= 0, logits + self.out_bias, -1e9)  # before top-k and top-p
            chosen = choose(logits, temperatures, seeds, positions + t - forced_len, top_k, top_p)
            fed = tf.where(forcing, tf.gather(forced, tf.minimum(t, last_column), axis=1), chosen)
            h = tf.where(going[:, None], h_next, h)
            hr = tf.where(going[:, None], hr_next + self.recurrent_bias, hr)
            last = tf.where(going, fed, last)
            words = tf.where(writing, tf.gather(after, chosen, batch_dims=1), words)
            out = out.write(t, chosen)
            t += 1
        return tf.transpose(out.stack()), h, last, words  # ids [batch, capacity]: row i's from forced_len[i]

    # numpy in, numpy out -------------------------------------------------------------------------

    def zero_state(self, batch: int) -> np.ndarray:
        return np.zeros([batch, self.units], np.float32)

    def word_states(self, texts: list[str], words: str = "free") -> np.ndarray:
        """The word state [batch] after each text (a seed, or the tail of a text to go on from):
        "free" writes anything; "book" only the book's words, going on inside a text's last word
        when its letters are a known prefix, else freely until the next word boundary."""
        if words not in WORDS:
            raise ValueError(f"words must be one of {', '.join(WORDS)}, not {words!r}")
        if words == "free":
            return np.full(len(texts), lex.OFF, np.int32)
        if self.lexicon is None:
            raise ValueError(f'words = "book" needs a lexicon: the model folder has no {lex.LEXICON_FILE} '
                             '(`cervantes lexicon --model DIR` writes it from the training text), '
                             'or set [generation] words = "free"')
        return np.array([self.lexicon.state_after(t) for t in texts], np.int32)

    def prime(self, seeds_ids: list[np.ndarray], states: np.ndarray | None = None, min_time: int = 1):
        """Consume each seed but its last character. Returns (states [batch, units], last ids [batch]).

        The time axis is padded to at least `min_time` steps (few shapes, few XLA compilations)."""
        batch = len(seeds_ids)
        lengths = np.array([len(s) - 1 for s in seeds_ids], np.int32)
        padded = np.zeros([batch, max(1, min_time, int(lengths.max(initial=0)))], np.int32)
        for i, s in enumerate(seeds_ids):
            padded[i, : len(s) - 1] = s[:-1]
        states = self.zero_state(batch) if states is None else np.asarray(states, np.float32)
        h = self._prime(padded, lengths, states).numpy()
        return h, np.array([s[-1] for s in seeds_ids], np.int32)

    def sample(self, last, states, temperatures, steps: int, seeds=None, positions=None, top_k: int = 0,
               top_p: float = 1.0, steps_left=None, words=None, forced=None, forced_width: int = 1,
               capacity: int | None = None):
        """Run `steps` steps over every row. Row i first reads forced[i] (ids to feed after `last`
        before sampling: the rest of a seed; None: none), then samples up to steps_left[i] ids (its
        state, last id and word state are those after its own last step); `words`: the rows' word
        states (word_states; None: all free). `forced_width` and `capacity` (>= steps) fix the
        compiled program's shapes, so that one program serves any steps up to capacity.
        Returns (ids [batch, steps], states, last ids, word states): row i's sampled ids first, at
        most steps - len(forced[i]) of them; the columns past a row's own count are meaningless."""
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], not {top_p}")
        capacity = steps if capacity is None else capacity
        if not 0 < steps <= capacity:
            raise ValueError(f"steps must be in 1..capacity ({capacity}), not {steps}")
        batch = len(last)
        seeds = np.array([secrets.randbits(63) for _ in range(batch)] if seeds is None else seeds, np.int64)
        positions = np.zeros(batch, np.int32) if positions is None else np.asarray(positions, np.int32)
        words = np.full(batch, lex.OFF, np.int32) if words is None else np.asarray(words, np.int32)
        forced = [()] * batch if forced is None else forced
        forced_len = np.array([len(f) for f in forced], np.int32)
        padded = np.zeros([batch, max(1, forced_width, int(forced_len.max(initial=0)))], np.int32)
        for i, f in enumerate(forced):
            padded[i, : len(f)] = f
        steps_left = np.full(batch, steps, np.int32) if steps_left is None else np.asarray(steps_left, np.int32)
        ids, h, last, words = self._sample(*map(tf.constant, (
            np.asarray(last, np.int32), np.asarray(states, np.float32), words,
            np.asarray(temperatures, np.float32), seeds, positions, padded, forced_len, np.int32(capacity),
            np.int32(steps), np.int32(top_k), np.float32(top_p), np.minimum(steps_left, steps))))
        ids = ids.numpy()
        if forced_len.any():  # row i's sampled ids begin at column forced_len[i]
            columns = np.minimum(np.arange(steps)[None, :] + forced_len[:, None], capacity - 1)
            ids = np.take_along_axis(ids, columns, axis=1)
        return ids[:, :steps], h.numpy(), last.numpy(), words.numpy()


@dataclass
class Generation:
    text: str  # the continuation only, without the seed
    state: np.ndarray  # [units]: after every character but the last
    last_char: str  # feed it with `state` to go on exactly where this stopped


def generate(sampler: Sampler, seeds: list[str], length: int, temperatures: float | list[float] = 1.0,
             random_seed: int | None = None, top_k: int = 0, top_p: float = 1.0,
             words: str = "free") -> list[Generation]:
    """Continue each (already cleaned, non-empty) seed by `length` characters, all in one batch."""
    word_states = sampler.word_states(seeds, words)
    states, last = sampler.prime([sampler.vocab.encode(s) for s in seeds])
    return _sample_rows(sampler, last, states, word_states, length, temperatures, random_seed, top_k, top_p)


def continue_from(sampler: Sampler, states: np.ndarray, last_chars: list[str], length: int,
                  temperatures: float | list[float] = 1.0, random_seed: int | None = None,
                  top_k: int = 0, top_p: float = 1.0, words: str = "free",
                  tails: list[str] | None = None) -> list[Generation]:
    """Go on from stored states and last characters exactly where a generation stopped; with
    "book", each row's `tails` (the text so far, at least its last word) give its word state."""
    if words != "free" and tails is None:
        raise ValueError("going on with the book's words needs the texts' tails")
    last = np.array([sampler.vocab.id_of(c) for c in last_chars], np.int32)
    word_states = sampler.word_states(tails if tails is not None else list(last_chars), words)
    return _sample_rows(sampler, last, np.asarray(states, np.float32), word_states, length, temperatures,
                        random_seed, top_k, top_p)


def _sample_rows(sampler: Sampler, last, states, word_states, length, temperatures, random_seed, top_k, top_p):
    """One temperature for all rows or one per row; row i's random seed is random_seed * 1_000_003 + i."""
    n = len(last)
    temps = temperatures if isinstance(temperatures, (list, tuple, np.ndarray)) else [temperatures] * n
    row_seeds = None if random_seed is None else [random_seed * 1_000_003 + i for i in range(n)]
    ids, states, last, _ = sampler.sample(last, states, temps, length, seeds=row_seeds, top_k=top_k,
                                          top_p=top_p, words=word_states)
    return [Generation(sampler.vocab.decode(ids[i]), states[i], sampler.vocab.decode([last[i]]))
            for i in range(n)]
