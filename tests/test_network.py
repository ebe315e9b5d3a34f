"""The network: the notebook's size, and a step that carries the GRU state."""

import numpy as np

from model.network import Hyperparameters, build


def test_notebook_parameter_count():
    assert build(Hyperparameters(vocab_size=86)).count_params() == 1_041_238


def test_step_shapes(tiny_network, tiny_vocab):
    ids = np.array([tiny_vocab.encode("Sancho"), tiny_vocab.encode("Quijot")])
    logits, state = tiny_network(ids)
    assert logits.shape == (2, 6, len(tiny_vocab))
    assert state.shape == (2, 16)


def test_state_carries_across_calls(tiny_network, tiny_vocab):
    ids = tiny_vocab.encode("En un lugar de la Mancha")[None, :]
    whole, _ = tiny_network(ids)
    first, state = tiny_network(ids[:, :10])
    second, _ = tiny_network(ids[:, 10:], state=state)
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), whole, atol=1e-5)
