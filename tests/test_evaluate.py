"""`cervantes evaluate`: the held-out loss with and without a duplicated block, and the sample report."""

from __future__ import annotations

import json

import pytest
from conftest import TINY_TEXT

from model import corpus, evaluate

CHAPTER = "\nCapítulo 49: Donde se trata del discreto coloquio que Sancho Panza tuvo con su señor.\n"
CHAPTER += TINY_TEXT


def test_a_chapter_written_twice_back_to_back_is_left_out_once():
    text = "final del capítulo 48." + CHAPTER + CHAPTER + "\nCapítulo 50: De las discretas altercaciones."
    deduped, spans = evaluate.without_duplicates(text, min_chars=100)
    assert deduped == "final del capítulo 48." + CHAPTER + "\nCapítulo 50: De las discretas altercaciones."
    # the copies share "\nCapítulo " with the next chapter's heading; that heading stays whole
    start = len("final del capítulo 48.") + len(CHAPTER)
    assert spans == [(start, start + len(CHAPTER))]


def test_copies_far_apart_are_each_left_out_at_their_own_place():
    one, two = TINY_TEXT[:120], TINY_TEXT[120:]
    text = one + "primero;" + two + "en medio," + one + "luego." + two + "fin."
    deduped, spans = evaluate.without_duplicates(text, min_chars=100)
    assert deduped == one + "primero;" + two + "en medio,luego.fin."
    assert [text[a:b] for a, b in spans] == [one, two]


def test_stock_phrases_are_not_duplicates():
    text = "-dijo Sancho- " * 3 + "y don Quijote respondió " * 2
    assert evaluate.without_duplicates(text, min_chars=100) == (text, [])


@pytest.mark.parametrize("strip_accents", [False, True])
def test_the_held_out_part_holds_chapter_49_twice(corpus_path, strip_accents):
    _, held_out = corpus.split(corpus.read(corpus_path, strip_accents=strip_accents))
    deduped, spans = evaluate.without_duplicates(held_out)
    assert len(spans) == 1
    start, end = spans[0]
    heading = "\nCapitulo 49:" if strip_accents else "\nCapítulo 49:"
    assert held_out[start:end].startswith(heading)
    assert deduped.count(heading) == 1 and held_out.count(heading) == 2
    if not strip_accents:
        assert (start, end) == (39_995, 55_114)  # as ../shared/data/README.md measured it


def test_held_out_figures_report_dedup_apart(tiny_network, tiny_vocab):
    block = TINY_TEXT + TINY_TEXT.upper() + TINY_TEXT[::-1] + TINY_TEXT.swapcase()  # 984 characters
    block += block[:100]  # over the 1000 that make a duplicate
    figures = evaluate.held_out_figures(tiny_network, tiny_vocab, block + block + "Sancho")
    dedup = figures["dedup"]
    assert dedup["left_out"] == [[len(block), 2 * len(block)]]
    assert dedup["characters"] < figures["characters"]
    assert {"nats_per_char", "bits_per_char", "characters"} <= dedup.keys()
    plain = evaluate.held_out_figures(tiny_network, tiny_vocab, TINY_TEXT)
    assert plain["dedup"]["left_out"] == [] and plain["dedup"]["bits_per_char"] == plain["bits_per_char"]


def test_settings_cover_every_temperature_per_variant():
    runs = evaluate.settings([0.5, 1.0], top_ks=[0, 10], top_ps=[1.0, 0.9])
    assert [s.label for s in runs] == ["0.5", "1", "0.5, top-k 10", "1, top-k 10", "0.5, top-p 0.9",
                                       "1, top-p 0.9"]
    with pytest.raises(ValueError):
        evaluate.settings([0.5], top_ps=[1.5])
    both = evaluate.settings([0.7], top_ps=[0.9], words=["free", "book"])
    assert [s.label for s in both] == ["0.7", "0.7, top-p 0.9", "book 0.7", "book 0.7, top-p 0.9"]
    with pytest.raises(ValueError):
        evaluate.settings([0.5], words=["books"])


def test_book_samples_use_only_known_words_and_free_ones_do_not(tiny_book_sampler):
    training, held_out = TINY_TEXT * 8, TINY_TEXT
    runs = evaluate.settings([1.0, 2.0], words=["free", "book"])
    report = evaluate.sample_report(tiny_book_sampler, training, held_out, runs, n=6, length=200, random_seed=1)
    figures = dict(report.rows)
    assert figures["book 1"].known_words == figures["book 2"].known_words == 1.0
    assert figures["1"].known_words < 0.9 and figures["2"].known_words < 0.9
    assert figures["book 1"].attested_pairs > figures["1"].attested_pairs


def test_seeds_come_from_the_text_and_end_a_word():
    text = TINY_TEXT * 20
    seeds = evaluate.seeds_from(text, 5, chars=30, random_seed=1)
    assert len(seeds) == 5 and len(set(seeds)) > 1
    assert all(s in text and s.endswith(" ") and len(s) >= 30 for s in seeds)


def test_sample_report_is_reproducible_and_measures_each_setting(tiny_sampler, tmp_path):
    training, held_out = TINY_TEXT * 8, TINY_TEXT
    runs = evaluate.settings([0.5, 1.0], top_ps=[0.9])
    report = evaluate.sample_report(tiny_sampler, training, held_out, runs, n=3, length=40, random_seed=2)
    assert [label for label, _ in report.rows] == ["held-out text", "0.5", "1", "0.5, top-p 0.9",
                                                   "1, top-p 0.9"]
    assert all(len(texts) == 3 and all(len(t) == 40 for t in texts) for texts in report.samples.values())
    again = evaluate.sample_report(tiny_sampler, training, held_out, runs, n=3, length=40, random_seed=2)
    assert again.samples == report.samples
    assert report.rows[0][1].longest_copy == 40  # the reference stretches are the book's own words
    assert "| held-out text |" in report.table() and len(report.to_dict()["rows"]) == 5
    report.write(tmp_path / "samples.txt")
    written = (tmp_path / "samples.txt").read_text(encoding="utf-8")
    assert written.count("--- ") == 12 and report.samples["1, top-p 0.9"][2] in written


def test_cli_reports_dedup_and_samples(tiny_model_dir, tmp_path, capsys):
    from cli.main import main

    text = tmp_path / "corpus.txt"
    text.write_text("Principio. " + TINY_TEXT * 40, encoding="utf-8")
    argv = ["evaluate", "--model", str(tiny_model_dir), "--corpus", str(text), "--json"]
    assert main(argv + ["--samples", "2", "--temperatures", "0.5,1", "--top-k", "3", "--length", "30"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"bits_per_char", "nats_per_char", "characters", "dedup"} <= out.keys()
    assert [r["sampling"] for r in out["samples"]["rows"]] == ["held-out text", "0.5", "1", "0.5, top-k 3",
                                                              "1, top-k 3"]
    assert main(argv[:-1]) == 0  # without --json: a line per figure
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("held-out loss over") and lines[1].startswith("dedup loss over")
    assert main(argv + ["--temperatures", "tibio"]) == 2
    assert "comma lists" in capsys.readouterr().err


def test_reference_stretches_spread_over_the_text_apart():
    text = " ".join(f"palabra{i:05d}" for i in range(2000))  # 30,000 characters, every word unique
    parts = evaluate.stretches(text, 16, 300, random_seed=3)
    starts = sorted(text.index(p) for p in parts)
    assert all(len(p) == 300 and text[text.index(p) - 1] == " " for p in parts)
    assert all(b - a >= 300 for a, b in zip(starts, starts[1:]))  # no two overlap
    assert starts[0] < len(text) / 16 and starts[-1] > len(text) * 15 / 16 - 300  # the whole text
