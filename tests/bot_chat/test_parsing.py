"""What users type, of every shape: commands, numbers, seeds. A reply or a clear error, never a crash."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.chat.parsing import Command, parse, parse_int, parse_number
from model import seeds


def test_commands_and_their_arguments():
    assert parse("/cervantes Sancho dijo") == Command("cervantes", "Sancho dijo")
    assert parse("/CERVANTES  Sancho\ndijo ") == Command("cervantes", "Sancho\ndijo")
    assert parse("/continuar") == Command("continuar", "")
    assert parse("/cervantes@CervantesBot Sancho", "cervantesbot") == Command("cervantes", "Sancho")
    assert parse("/cervantes@OtroBot Sancho", "CervantesBot") is None  # meant for another bot
    assert parse("!cervantes Sancho", prefixes="!") == Command("cervantes", "Sancho")
    assert parse("Sancho dijo") is None
    assert parse("/") is None and parse("") is None


@given(st.text())
@settings(max_examples=500, deadline=None)
def test_parse_never_raises(text):
    result = parse(text, "CervantesBot", prefixes="/!")
    assert result is None or (result.name.isascii() and result.argument == result.argument.strip())


@given(st.text(max_size=40))
@settings(max_examples=500, deadline=None)
def test_numbers_are_finite_or_none(text):
    value = parse_number(text)
    assert value is None or math.isfinite(value)
    n = parse_int(text)
    assert n is None or abs(n) < 10**9


def test_number_shapes():
    assert parse_number("0,5") == parse_number("0.5") == parse_number(" .5 ") == 0.5
    assert parse_number("1e-1") == 0.1
    for bad in ("nan", "inf", "-inf", "1e400", "abc", "0x1", "1/2", "", "1,2,3", "٣", "½", "1_0"):
        assert parse_number(bad) is None, bad
    assert parse_int("300") == 300 and parse_int("3.0") is None and parse_int("9" * 30) is None


@given(st.text(max_size=2000))
@settings(max_examples=300, deadline=None)
def test_any_seed_becomes_text_the_model_knows(tiny_vocab, raw):
    seed = seeds.clean(raw, tiny_vocab, max_chars=100)
    assert seed.text and all(c in tiny_vocab for c in seed.text)
    assert len(seed.text) <= max(100, len(seeds.DEFAULT_OPENING))


def test_hostile_seeds(tiny_vocab):
    for raw in ("\x00" * 10, "\u202e" + "Sancho", "🐴" * 1000, "a" * 100_000, "\x7f",
                "Sancho\u200b\u200bdijo", "<b>Sancho</b> @everyone"):
        seed = seeds.clean(raw, tiny_vocab)
        assert seed.text and all(c in tiny_vocab for c in seed.text)
        assert len(seed.text) <= seeds.MAX_SEED_CHARS


def test_whole_numbers_with_spanish_thousands_separators():
    assert parse_int("1.000") == 1000 and parse_int("1 000") == 1000 and parse_int("300") == 300
    assert parse_int("1.00") is None and parse_int("10.0000") is None and parse_int("1,5") is None


def test_a_list_of_characters_is_short_and_shows_invisible_ones_by_code():
    from bot.chat.parsing import list_characters

    assert list_characters("🐴☃") == "🐴 ☃"
    assert list_characters("\x00\u202e\u200b\ufeff") == "U+0000 U+202E U+200B U+FEFF"
    many = "".join(chr(0x4E00 + i) for i in range(3000))
    assert list_characters(many).endswith(" …") and len(list_characters(many).split()) == 11
