"""Embedding -> GRU -> Dense, the notebook's network, exposed as a step (ids, state) -> (logits, state)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import tensorflow as tf


@dataclass(frozen=True)
class Hyperparameters:
    vocab_size: int
    embedding_dim: int = 128
    rnn_units: int = 512
    dropout: float = 0.0  # on the embeddings and on the GRU outputs, training only
    recurrent_dropout: float = 0.0  # on the GRU state inside the recurrence, training only
    strip_accents: bool = False  # the normalization the vocabulary was built with

    def to_dict(self) -> dict:
        return asdict(self)


class CharGRU(tf.keras.Model):
    def __init__(self, hp: Hyperparameters, **kwargs):
        super().__init__(**kwargs)
        self.hp = hp
        self.embedding = tf.keras.layers.Embedding(hp.vocab_size, hp.embedding_dim)
        self.gru = tf.keras.layers.GRU(hp.rnn_units, return_sequences=True, return_state=True,
                                       recurrent_dropout=hp.recurrent_dropout)
        self.drop = tf.keras.layers.Dropout(hp.dropout)
        self.dense = tf.keras.layers.Dense(hp.vocab_size)

    def call(self, ids, state=None, training=False):
        """ids: [batch, time] int; state: [batch, units] or None (zeros).

        Returns logits [batch, time, vocab] and the state after the last step [batch, units].
        """
        x = self.drop(self.embedding(ids), training=training)
        if state is None:
            state = tf.zeros([tf.shape(ids)[0], self.hp.rnn_units], dtype=x.dtype)
        x, state = self.gru(x, initial_state=state, training=training)
        return self.dense(self.drop(x, training=training)), state

    def build_weights(self) -> "CharGRU":
        """Create every variable with one dummy call, so weights can be counted, saved and loaded."""
        self(tf.zeros([1, 1], dtype=tf.int32))
        return self


def build(hp: Hyperparameters) -> CharGRU:
    return CharGRU(hp).build_weights()
