"""Seeds as users type them."""

from model import seeds


def test_known_text_is_kept(tiny_vocab):
    s = seeds.clean("Sancho dijo", tiny_vocab)
    assert (s.text, s.dropped, s.truncated, s.default) == ("Sancho dijo", "", False, False)


def test_unknown_characters_are_dropped_and_named(tiny_vocab):
    s = seeds.clean("Sancho 🐴🐴 dijo ☃", tiny_vocab)
    assert s.text == "Sancho  dijo "
    assert s.dropped == "🐴☃"


def test_accented_letters_the_model_lacks_become_their_base(tiny_vocab):
    assert "â" not in tiny_vocab
    assert seeds.clean("mâs", tiny_vocab).text == "mas"


def test_decomposed_accents_are_composed(tiny_vocab):
    assert seeds.clean("vivi\u0301a", tiny_vocab).text == "vivía"


def test_long_seed_keeps_its_end(tiny_vocab):
    s = seeds.clean("a" * 600 + "Sancho", tiny_vocab, max_chars=100)
    assert s.truncated and len(s.text) == 100 and s.text.endswith("Sancho")


def test_empty_seed_uses_the_default_opening(tiny_vocab):
    for raw in ("", "   ", "🐴"):
        s = seeds.clean(raw, tiny_vocab)
        assert s.default and s.text == seeds.DEFAULT_OPENING


def test_only_the_part_read_names_its_unknown_characters(tiny_vocab):
    s = seeds.clean("☃" * 5 + "a" * 200 + "🐴Sancho", tiny_vocab, max_chars=100)
    assert s.truncated and s.text.endswith("Sancho") and len(s.text) == 100
    assert s.dropped == "🐴"  # the snowmen were in the part cut away
