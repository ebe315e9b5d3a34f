"""Held-out loss in nats and bits per character, reading the text as the bot does: state carried."""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from model.network import CharGRU

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
