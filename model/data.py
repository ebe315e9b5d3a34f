"""Training batches as in the notebook: 100 input characters, the same shifted by one as targets."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

SEQ_LEN = 100
BATCH_SIZE = 64
SHUFFLE_BUFFER = 10_000


def sequences(ids: np.ndarray, seq_len: int = SEQ_LEN, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Cut ids[offset:] into windows of seq_len + 1: inputs [n, seq_len], targets shifted by one."""
    n = (len(ids) - offset) // (seq_len + 1)
    windows = ids[offset : offset + n * (seq_len + 1)].reshape(n, seq_len + 1)
    return windows[:, :-1], windows[:, 1:]


def training_dataset(
    ids: np.ndarray,
    seq_len: int = SEQ_LEN,
    batch_size: int = BATCH_SIZE,
    shuffle_buffer: int = SHUFFLE_BUFFER,
    offset: int = 0,
    seed: int | None = None,
) -> tf.data.Dataset:
    """One epoch of (inputs, targets) batches [batch, seq_len]; each epoch may start at another offset,
    so the windows' borders move and the network sees every character in many contexts."""
    inputs, targets = sequences(ids, seq_len, offset)
    return (
        tf.data.Dataset.from_tensor_slices((inputs, targets))
        .shuffle(shuffle_buffer, seed=seed)
        .batch(batch_size, drop_remainder=True)
        .prefetch(tf.data.AUTOTUNE)
    )


def stream_batches(ids: np.ndarray, seq_len: int = SEQ_LEN, batch_size: int = BATCH_SIZE,
                   offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One epoch for stateful training: ids[offset:] cut into batch_size contiguous streams, and
    step s takes the s-th window of every stream, so row b of step s + 1 continues row b of step s
    and the GRU state can be carried from one step to the next, as the bot and the evaluation read.

    Returns inputs and targets [steps, batch_size, seq_len].
    """
    usable = len(ids) - offset - 1
    length = usable // batch_size // seq_len * seq_len  # characters per stream, whole windows only
    if length < seq_len:
        raise ValueError(f"{len(ids)} characters are too few for {batch_size} streams of {seq_len}")
    starts = offset + np.arange(batch_size) * (usable // batch_size)
    rows = np.stack([ids[s : s + length + 1] for s in starts])  # [batch, length + 1]
    steps = length // seq_len
    inputs = rows[:, :-1].reshape(batch_size, steps, seq_len).transpose(1, 0, 2)
    targets = rows[:, 1:].reshape(batch_size, steps, seq_len).transpose(1, 0, 2)
    return inputs, targets
