"""Export as a SavedModel whose serving signature generates: (seed, temperature, length) -> text.

As the notebook's export section, but with the whole generation inside one graph call: the seeds
are split into characters and looked up in the graph, primed, sampled and decoded back to text.
Seeds should be NFC text; characters the model does not know are left out.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from model.sampler import Sampler


class ExportedGenerator(tf.Module):
    def __init__(self, sampler: Sampler):
        super().__init__()
        self.sampler = sampler
        chars = sampler.vocab.chars
        self.char_to_id = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(chars), tf.range(1, len(chars) + 1)),
            default_value=0)
        self.id_to_char = tf.constant([""] + chars)  # id 0, the unknown character, decodes to ""
        self.space_id = tf.constant(sampler.vocab.id_of(" "), tf.int32)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="seed"),
                                  tf.TensorSpec([None], tf.float32, name="temperature"),
                                  tf.TensorSpec([], tf.int32, name="length")])
    def generate(self, seed, temperature, length):
        ids = self.char_to_id.lookup(tf.strings.unicode_split(seed, "UTF-8"))  # ragged [batch, (chars)]
        ids = tf.ragged.boolean_mask(ids, ids > 0)
        lengths = tf.cast(ids.row_lengths(), tf.int32)
        padded = ids.to_tensor(default_value=0)  # [batch, max_chars]
        batch = tf.shape(seed)[0]
        empty = tf.equal(lengths, 0)
        last = tf.where(empty, self.space_id,
                        tf.gather(tf.pad(padded, [[0, 0], [0, 1]]), tf.maximum(lengths - 1, 0), batch_dims=1))
        state = self.sampler._prime_impl(padded, tf.maximum(lengths - 1, 0),
                                         tf.zeros([batch, self.sampler.units]))
        seeds = tf.random.uniform([batch], maxval=tf.int64.max, dtype=tf.int64)
        words = tf.zeros([batch], tf.int32)  # the free sampler: every character allowed
        nothing = tf.zeros([batch], tf.int32)  # positions from 0, and no forced ids: the seed is primed
        out, state, last, _ = self.sampler._sample_impl(last, state, words, temperature, seeds, nothing,
                                                     tf.zeros([batch, 1], tf.int32), nothing, length, length,
                                                     tf.constant(0), tf.constant(1.0), tf.fill([batch], length))
        text = tf.strings.reduce_join(tf.gather(self.id_to_char, out), axis=-1)
        return {"text": text, "state": state, "last_char": tf.gather(self.id_to_char, last)}


def export(sampler: Sampler, out_dir: str | Path) -> Path:
    module = ExportedGenerator(sampler)
    tf.saved_model.save(module, str(out_dir), signatures={"serving_default": module.generate})
    return Path(out_dir)
