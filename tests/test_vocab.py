"""The vocabulary: ids and back, unknown characters, saved beside the weights."""

from model.vocab import UNK_ID, Vocab


def test_round_trip(tiny_vocab):
    text = "¿Qué gigantes? dijo Sancho"
    assert tiny_vocab.decode(tiny_vocab.encode(text)) == text


def test_unknown_characters_do_not_fail(tiny_vocab):
    ids = tiny_vocab.encode("Sancho 🐴 dijo")
    assert UNK_ID in ids.tolist()
    assert tiny_vocab.decode(ids) == "Sancho  dijo"  # the unknown id decodes to nothing


def test_ids_are_sorted_characters_after_the_unknown_id():
    v = Vocab.from_text("cab")
    assert len(v) == 4
    assert [v.id_of(c) for c in "abc"] == [1, 2, 3]


def test_saved_and_loaded(tmp_path, tiny_vocab):
    tiny_vocab.save(tmp_path / "vocab.json")
    again = Vocab.load(tmp_path / "vocab.json")
    assert again.chars == tiny_vocab.chars
    assert "í" in (tmp_path / "vocab.json").read_text(encoding="utf-8")  # readable JSON, not escapes
