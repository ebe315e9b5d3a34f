"""Sample-quality figures on tiny texts whose right answers can be counted by hand."""

from collections import Counter

import pytest

from model import quality

BOOK_TEXT = (
    "En un lugar de la Mancha, de cuyo nombre no quiero acordarme, no ha mucho tiempo que vivía "
    "un hidalgo de los de lanza en astillero, adarga antigua, rocín flaco y galgo corredor. "
    "Dijo Sancho a su señor que la cabeza le dolía.\n"
)


@pytest.fixture(scope="module")
def book():
    return quality.Book(BOOK_TEXT)


def test_words_are_lower_case_letters_and_a_cut_word_is_left_out():
    assert quality.words("Dijo Sancho: ¡Señor, 3 gigantes!") == ["dijo", "sancho", "señor", "gigantes"]
    assert quality.words("la Mancha de cuy") == ["la", "mancha", "de"]  # "cuy" was cut by the length


def test_known_share_counts_the_words_the_book_uses(book):
    assert quality.known_share(["hidalgo", "rocín", "ordenador", "señor"], book.vocabulary) == 0.75


def test_attested_pairs_are_neighbours_the_book_has(book):
    # "de la", "la mancha" and "no quiero" are the book's; "mancha no" is not
    sample = quality.words("de la Mancha no quiero ")
    assert quality.pairs(sample) == [("de", "la"), ("la", "mancha"), ("mancha", "no"), ("no", "quiero")]
    assert quality.attested_share([sample], book.pairs) == pytest.approx(3 / 4)
    shuffled = quality.words("cuyo la de Mancha nombre ")  # the same kind of words, out of order
    assert quality.attested_share([shuffled], book.pairs) == 0.0
    assert quality.attested_share([["sancho"]], book.pairs) == 1.0  # no pair to judge


def test_a_book_of_several_texts_reads_each_on_its_own():
    two = quality.Book(["Dijo Sancho.", "Panza vino."])  # "sancho panza" spans the two: not a pair
    assert two.vocabulary == {"dijo", "sancho", "panza", "vino"}
    assert two.pairs == {("dijo", "sancho"), ("panza", "vino")}


def test_distinct_trigrams_drop_when_the_text_says_the_same_thing_again():
    fresh = quality.words("el hidalgo de la Mancha salió al campo.")
    assert quality.distinct_trigrams([fresh]) == 1.0
    again = quality.words("de la Mancha de la Mancha de la Mancha.")
    assert quality.distinct_trigrams([again]) == pytest.approx(3 / 7)  # 7 3-grams, 3 different
    # counted within each sample: two samples that each say something once are still fresh
    assert quality.distinct_trigrams([["a", "b"], ["c", "d"]]) == 1.0


def test_a_loop_is_a_stretch_written_three_times():
    looping = "y dijo Sancho que sí, " * 3 + "y se fue."
    assert quality.loop(looping) is not None
    assert quality.loop("y dijo Sancho que sí, " * 2 + "y se fue.") is None  # twice is not a loop
    assert quality.loop(BOOK_TEXT) is None
    # 45 a's hold only two non-overlapping 20-character stretches; 60 hold three
    assert quality.loop("a" * 45) is None
    assert quality.loop("a" * 60) == "a" * 20


def test_js_divergence_is_zero_for_the_same_words_and_one_for_none_shared():
    a = Counter({"la": 2, "mancha": 1})
    assert quality.js_divergence(a, Counter({"la": 4, "mancha": 2})) == pytest.approx(0.0)
    assert quality.js_divergence(a, Counter({"rocín": 1})) == pytest.approx(1.0)
    assert 0 < quality.js_divergence(a, Counter({"la": 1, "mancha": 2})) < 1


def test_most_overused_word_is_the_one_far_above_its_book_rate(book):
    sample = Counter(quality.words("la cabeza, la cabeza y la cabeza de la Mancha; cabeza."))
    over = quality.most_overused(sample, book.counts)
    assert over.word == "cabeza"
    assert over.share == pytest.approx(4 / 11)
    # "cabeza" is 1 of the book's 43 words; counted + 1, its book share is 2 / 43
    assert over.ratio == pytest.approx((4 / 11) / (2 / 43))
    assert quality.most_overused(Counter({"cabeza": 2}), book.counts) is None  # too rare to judge


def test_measure_sees_a_copy_and_a_loop(book):
    copying = "Y entonces un hidalgo de los de lanza en astillero habló."
    looping = "la cabeza le dolía mucho, " * 3
    f = quality.measure([copying, looping], book)
    assert f.samples == 2
    assert f.copied == " un hidalgo de los de lanza en astillero" and f.longest_copy == len(f.copied)
    assert f.loops == 0.5
    assert f.overused.word in {"cabeza", "dolía", "mucho"}
    assert f.known_words < 1.0  # "entonces" and "habló" are not in the tiny book
    row = quality.table([("0.5", f)]).splitlines()[2]
    assert row.startswith("| 0.5 |") and f"| {f.longest_copy} (" in row and "| 1/2 |" in row
    assert f"| {100 * f.attested_pairs:.1f}% |" in row and 0 < f.attested_pairs < 1
