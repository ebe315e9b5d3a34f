"""The stepwise sampler with a tiny model of fixed random weights."""

import numpy as np
import pytest

from model.network import build
from model.sampler import Sampler, continue_from, generate
from model.vocab import UNK_ID

SEEDS = ["Sancho", "En un lugar de la Mancha", "¿Qué", "y"]


def test_cell_matches_the_keras_network(tiny_sampler, tiny_network, tiny_vocab):
    ids = tiny_vocab.encode("rocín flaco y galgo")
    state, last = tiny_sampler.prime([ids])
    _, keras_state = tiny_network(ids[None, :-1])
    np.testing.assert_allclose(state, keras_state, atol=1e-5)
    assert last[0] == ids[-1]


def test_ragged_seeds_prime_as_if_alone(tiny_sampler, tiny_vocab):
    batch_states, batch_last = tiny_sampler.prime([tiny_vocab.encode(s) for s in SEEDS])
    for i, seed in enumerate(SEEDS):
        alone, last = tiny_sampler.prime([tiny_vocab.encode(seed)])
        np.testing.assert_allclose(batch_states[i], alone[0], atol=1e-5)
        assert batch_last[i] == last[0]


def test_batched_rows_equal_rows_run_alone(tiny_sampler):
    batch = generate(tiny_sampler, SEEDS, 80, 0.8, random_seed=7)
    for i, seed in enumerate(SEEDS):
        # row i of a batch uses random_seed * 1_000_003 + i; give the lone run the same row seed
        states, last = tiny_sampler.prime([tiny_sampler.vocab.encode(seed)])
        ids, *_ = tiny_sampler.sample(last, states, [0.8], 80, seeds=[7 * 1_000_003 + i])
        assert batch[i].text == tiny_sampler.vocab.decode(ids[0])


def test_fixed_random_seed_is_reproducible_and_rows_differ(tiny_sampler):
    a = generate(tiny_sampler, ["Sancho"] * 3, 60, 1.0, random_seed=3)
    b = generate(tiny_sampler, ["Sancho"] * 3, 60, 1.0, random_seed=3)
    assert [g.text for g in a] == [g.text for g in b]
    assert len({g.text for g in a}) == 3


def test_each_row_has_its_own_temperature(tiny_sampler):
    greedy = generate(tiny_sampler, ["Sancho"], 60, 0.0)[0].text
    rows = generate(tiny_sampler, ["Sancho"] * 4, 60, [0.0, 5.0, 0.0, 5.0], random_seed=1)
    assert rows[0].text == rows[2].text == greedy
    assert rows[1].text != greedy and rows[3].text != greedy
    # a hot row spreads over many more characters than a greedy one
    assert len(set(rows[1].text)) > len(set(greedy))


def test_unknown_id_is_never_sampled(tiny_network, tiny_vocab):
    # a network that would pick the unknown id almost always: it must still never come out
    biased = build(tiny_network.hp)
    biased.set_weights(tiny_network.get_weights())
    bias = biased.dense.bias.numpy()
    bias[UNK_ID] += 50.0
    biased.dense.bias.assign(bias)
    sampler = Sampler(biased, tiny_vocab)
    states, last = sampler.prime([tiny_vocab.encode("Sancho")] * 8)
    ids, *_ = sampler.sample(last, states, [0.0, 0.5, 1.0, 2.0] * 2, 200)
    assert UNK_ID not in ids


def test_top_k_restricts_the_choice(tiny_sampler):
    one = generate(tiny_sampler, ["Sancho"], 60, 3.0, random_seed=5, top_k=1)[0].text
    assert one == generate(tiny_sampler, ["Sancho"], 60, 0.0)[0].text  # top-1 is greedy


def test_greedy_continuation_goes_on_exactly_where_it_stopped(tiny_sampler):
    whole = generate(tiny_sampler, ["Sancho dijo"], 200, 0.0)[0]
    first = generate(tiny_sampler, ["Sancho dijo"], 100, 0.0)[0]
    second = continue_from(tiny_sampler, first.state[None], [first.last_char], 100, 0.0)[0]
    assert first.text + second.text == whole.text
    np.testing.assert_allclose(second.state, whole.state, atol=1e-5)


def _draws(logits, temperature, top_p, rows=4000):
    """The ids `choose` picks for one row of logits, drawn `rows` times with different seeds."""
    import tensorflow as tf

    from model.sampler import choose

    batch = tf.repeat(tf.constant([logits], tf.float32), rows, axis=0)
    ids = choose(batch, tf.fill([rows], float(temperature)), tf.range(rows, dtype=tf.int64),
                 tf.zeros([rows], tf.int32), top_p=top_p)
    return set(ids.numpy().tolist())


def test_top_p_keeps_the_fewest_likeliest_characters_that_reach_p():
    import math

    # ids 1..4 with probabilities 0.5, 0.3, 0.15, 0.05 (id 0, the unknown one, never)
    logits = [0.0] + [math.log(p) for p in (0.5, 0.3, 0.15, 0.05)]
    assert _draws(logits, 1.0, 1.0) == {1, 2, 3, 4}
    assert _draws(logits, 1.0, 0.7) == {1, 2}  # 0.5 is short of 0.7; 0.5 + 0.3 reaches it
    assert _draws(logits, 1.0, 0.85) == {1, 2, 3}
    assert _draws(logits, 1.0, 0.4) == {1}
    # the nucleus is taken at the row's temperature: hotter, flatter, wider
    assert _draws(logits, 3.0, 0.7) == {1, 2, 3}


def test_top_p_one_changes_nothing_and_a_tiny_one_is_greedy(tiny_sampler):
    plain = generate(tiny_sampler, ["Sancho"] * 2, 60, 1.0, random_seed=9)
    assert [g.text for g in generate(tiny_sampler, ["Sancho"] * 2, 60, 1.0, random_seed=9, top_p=1.0)] \
        == [g.text for g in plain]
    greedy = generate(tiny_sampler, ["Sancho"], 60, 0.0)[0].text
    assert generate(tiny_sampler, ["Sancho"], 60, 3.0, random_seed=5, top_p=1e-6)[0].text == greedy
    with pytest.raises(ValueError):
        generate(tiny_sampler, ["Sancho"], 10, 1.0, top_p=0.0)
