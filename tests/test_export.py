"""The exported SavedModel reloads with nothing of ours and generates."""

import tensorflow as tf

from model.export import export
from model.sampler import generate


def test_saved_model_reloads_and_generates(tmp_path, tiny_sampler):
    export(tiny_sampler, tmp_path / "saved")
    reloaded = tf.saved_model.load(str(tmp_path / "saved"))
    out = reloaded.signatures["serving_default"](
        seed=tf.constant(["Sancho dijo", "¿Qué"]), temperature=tf.constant([0.0, 1.0]),
        length=tf.constant(40))
    texts = [t.decode("utf-8") for t in out["text"].numpy()]
    assert [len(t) for t in texts] == [40, 40]
    assert out["state"].shape == (2, tiny_sampler.units)
    # greedy through the SavedModel is greedy through our own sampler
    assert texts[0] == generate(tiny_sampler, ["Sancho dijo"], 40, 0.0)[0].text
