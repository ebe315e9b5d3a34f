"""The book's words as the sampler walks them: the trie's states, its transition table, and
samples of the tiny untrained model held to the words of TINY_TEXT."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import TINY_TEXT
from model import lexicon as lex
from model.lexicon import Lexicon
from model.quality import words
from model.sampler import continue_from, generate
from model.vocab import UNK_ID, Vocab

BOOK = Lexicon(["sancho", "san", "panza", "dijo", "de", "del", "la", "mancha", "ínsula"])
VOCAB = Vocab.from_text("SsanchoPpzdijelmÍíu ,.-¿?\n")


def allowed(state: int, table: np.ndarray = None) -> str:
    """The characters allowed in a state, as a sorted string."""
    row = (BOOK.table(VOCAB) if table is None else table)[state]
    return "".join(sorted(VOCAB.decode([i]) for i in np.flatnonzero(row >= 0)))


def test_the_state_after_a_text_is_that_of_its_last_letters():
    assert BOOK.state_after("") == BOOK.state_after("Sancho dijo ") == lex.ROOT
    assert BOOK.state_after("dijo, San") == BOOK.state_after("SAN") == BOOK.walk("san")  # lower case
    assert BOOK.state_after("Sancho dijo xyz") == lex.FREE  # not a prefix of the book's words
    assert BOOK.state_after("sanchoz") == lex.FREE
    assert "Sancho" in BOOK and "sanch" not in BOOK and "quijote" not in BOOK


def test_between_words_any_first_letter_of_a_word_or_any_non_letter():
    assert allowed(lex.ROOT) == "\n ,-.?PSdlmps¿Íí"  # no "a", "c", "i", "o": no word starts so


def test_inside_a_word_only_letters_that_go_on_to_a_word_and_an_end_only_after_a_whole_word():
    assert allowed(BOOK.walk("sa")) == "n"
    assert allowed(BOOK.walk("san")) == "\n ,-.?c¿"  # "san" is a word: it may end; or go on to "sancho"
    assert allowed(BOOK.walk("sanch")) == "o"  # not a word: no end here
    assert allowed(BOOK.walk("de")) == "\n ,-.?l¿"
    assert allowed(BOOK.walk("ín")) == "Ss"  # compared in lower case: either case goes on


def test_inside_a_seed_word_the_book_lacks_anything_until_the_next_boundary():
    table = BOOK.table(VOCAB)
    assert len(allowed(lex.FREE)) == len(VOCAB) - 1  # everything but the unknown id
    assert table[lex.FREE, VOCAB.id_of("z")] == lex.FREE and table[lex.FREE, VOCAB.id_of(" ")] == lex.ROOT


def test_off_allows_everything_but_the_unknown_id_and_never_changes():
    row = BOOK.table(VOCAB)[lex.OFF]
    assert row[UNK_ID] == lex.NOT_ALLOWED and set(np.delete(row, UNK_ID)) == {lex.OFF}


@pytest.mark.parametrize("book, vocab", [(BOOK, VOCAB), ("tiny", "tiny")])
def test_no_state_is_left_without_an_allowed_character(book, vocab, tiny_lexicon, tiny_vocab):
    book, vocab = (tiny_lexicon, tiny_vocab) if book == "tiny" else (book, vocab)
    table = book.table(vocab)
    assert table.shape == (book.states, len(vocab))
    assert (table >= 0).any(axis=1).all()
    assert (table[:, UNK_ID] == lex.NOT_ALLOWED).all()


def test_the_shipped_lexicon_leaves_no_state_without_an_allowed_character():
    from model import bundle

    shipped = bundle.load()
    table = shipped.lexicon.table(shipped.vocab)
    assert (table >= 0).any(axis=1).all()
    space = shipped.vocab.id_of(" ")
    for word in shipped.lexicon.words[::50]:  # every 50th word, walked id by id, may end
        state = lex.ROOT
        for c in word:
            state = table[state, shipped.vocab.id_of(c if c in shipped.vocab else c.upper())]  # W, K
            assert state >= 0, word
        assert table[state, space] == lex.ROOT, word


def test_from_texts_reads_each_text_on_its_own_and_keeps_writable_words():
    vocab = Vocab.from_text("abcdeABC ")
    book = Lexicon.from_texts(["Abad cab dab", "ebbe acab"], vocab)  # "dab" and "acab" end their texts
    assert book.words == ["abad", "cab", "ebbe"]
    assert Lexicon.from_texts(["ñandú y abad "], vocab).words == ["abad"]  # ñ, ú, y: not writable


def test_a_saved_lexicon_loads_the_same_and_saves_the_same_bytes(tmp_path):
    first = BOOK.save(tmp_path).read_bytes()
    loaded = Lexicon.load(tmp_path)
    assert loaded.words == BOOK.words and (loaded.table(VOCAB) == BOOK.table(VOCAB)).all()
    assert loaded.save(tmp_path).read_bytes() == first
    assert Lexicon.load(tmp_path / "elsewhere") is None


# samples of the tiny untrained model: it would write anything; held to the book, every word is one

SEEDS = ["Sancho ", "En un lugar de la ", "¿Qué", "dijo Sancho Pan", "rocín fla", "y ", "xyzzy", "Mancha, "]


@pytest.mark.parametrize("temperature", [0.0, 1.0, 2.0])
def test_every_word_of_many_book_samples_is_the_books(tiny_book_sampler, tiny_lexicon, temperature):
    rows = SEEDS * 8
    samples = generate(tiny_book_sampler, rows, 400, temperature, random_seed=11, words="book")
    free = generate(tiny_book_sampler, rows, 400, temperature, random_seed=11, words="free")
    checked = 0
    for seed, sample in zip(rows, samples):
        assert len(sample.text) == 400  # never a state without an allowed character (that writes "")
        written = words(seed + sample.text)[len(words(seed)):]  # a word the seed ends inside, then on
        if seed == "xyzzy":  # a seed's word the book lacks: free until the next boundary
            written = written[1:]
        assert all(w in tiny_lexicon for w in written), (seed, sample.text)
        checked += len(written)
    assert checked > 1000
    unknown = [w for seed, s in zip(rows, free) for w in words(s.text) if w not in tiny_lexicon]
    assert unknown  # the same model, free, invents words (so the test above can fail)


def test_a_seed_inside_a_known_word_is_followed_to_a_word_of_the_book(tiny_book_sampler, tiny_lexicon):
    for sample in generate(tiny_book_sampler, ["rocín fla"] * 16, 30, 1.5, random_seed=3, words="book"):
        assert words("fla" + sample.text)[0] == "flaco"


def test_a_book_continuation_from_a_tail_is_exactly_the_longer_sample(tiny_book_sampler):
    for temperature in (0.0, 1.3):
        whole = generate(tiny_book_sampler, ["Sancho"], 300, temperature, random_seed=4, words="book")[0]
        for cut in (7, 50, 133):
            first = generate(tiny_book_sampler, ["Sancho"], cut, temperature, random_seed=4, words="book")[0]
            rest = continue_from(tiny_book_sampler, first.state[None], [first.last_char], 300 - cut,
                                 temperature, words="book", tails=["Sancho" + first.text])[0]
            if temperature == 0.0:
                assert first.text + rest.text == whole.text
            assert all(w in tiny_book_sampler.lexicon for w in words("Sancho" + first.text + rest.text)[1:])


def test_book_needs_a_lexicon_and_words_must_be_known(tiny_sampler):
    with pytest.raises(ValueError, match="lexicon"):
        generate(tiny_sampler, ["Sancho"], 10, 1.0, words="book")
    with pytest.raises(ValueError, match="words"):
        generate(tiny_sampler, ["Sancho"], 10, 1.0, words="books")
