"""The suffix array, the longest copy of a sample, the longest repeat of a text."""

from hypothesis import given, settings
from hypothesis import strategies as st

from model.suffixes import Index, longest_repeat, suffix_array

LETTERS = st.text(alphabet="abñ «–", max_size=60)


@given(LETTERS)
@settings(max_examples=200, deadline=None)
def test_suffixes_sort_as_python_compares_strings(text):
    assert suffix_array(text).tolist() == sorted(range(len(text)), key=lambda i: text[i:])


@given(LETTERS, LETTERS)
@settings(max_examples=200, deadline=None)
def test_longest_copy_is_the_longest_common_substring(book, sample):
    start, length = Index(book).longest_copy(sample)
    naive = max((j - i for i in range(len(sample)) for j in range(i, len(sample) + 1)
                 if sample[i:j] in book), default=0)
    assert length == naive
    assert sample[start : start + length] in book


def test_longest_copy_finds_the_quoted_words():
    book = Index("En un lugar de la Mancha, de cuyo nombre no quiero acordarme")
    start, length = book.longest_copy("Y dijo: de cuyo nombre no me acuerdo")
    assert "Y dijo: de cuyo nombre no me acuerdo"[start : start + length] == " de cuyo nombre no "
    assert book.longest_copy("XQ") == (0, 0)  # neither letter is in the book
    assert "la Mancha" in book and "la mancha" not in book


def test_longest_repeat_finds_a_block_written_twice():
    block = "Capítulo 49: Donde se trata del discreto coloquio. " * 1 + "Sancho habló."
    text = "Principio del libro. " + block + block + "Capítulo 50: otra cosa."
    first, second, length = longest_repeat(text)
    assert text[first : first + length] == text[second : second + length]
    assert second - first == len(block)  # the copy starts one block after the original
    assert length >= len(block)


def test_longest_repeat_of_a_text_without_repeats():
    assert longest_repeat("abc")[2] == 0
    assert longest_repeat("")[2] == 0
    assert longest_repeat("abcab") == (0, 3, 2)
