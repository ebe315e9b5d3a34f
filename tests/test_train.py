"""Training on a small slice: the loss falls, checkpoints resume, Ctrl-C keeps the work."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest

from model import bundle, corpus, data, train

SMALL = train.TrainConfig(epochs=2, max_steps_per_epoch=8, batch_size=16, rnn_units=32,
                          embedding_dim=16, learning_rate=1e-2, dropout=0.0, recurrent_dropout=0.0,
                          patience=5)


@pytest.fixture(scope="module")
def text(corpus_path) -> str:
    return corpus.read(corpus_path)[:40_000]


def _metrics(folder):
    with (folder / train.METRICS_FILE).open() as f:
        return list(csv.DictReader(f))


def test_a_few_steps_make_the_loss_fall(tmp_path, text):
    result = train.train(text, tmp_path, SMALL, progress=False, log=lambda *_: None)
    rows = _metrics(tmp_path)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])
    assert float(rows[1]["val_loss"]) < float(rows[0]["val_loss"])
    assert result.best_epoch == 2
    assert (tmp_path / train.PLOT_FILE).read_bytes().startswith(b"\x89PNG")
    loaded = bundle.load(tmp_path)  # the run folder is a model folder: the best epoch
    assert loaded.hp.rnn_units == 32 and len(loaded.vocab) == len(set(text)) + 1


def test_resume_continues_at_the_next_epoch(tmp_path, text):
    train.train(text, tmp_path, SMALL, progress=False, log=lambda *_: None)
    messages = []
    more = dataclasses.replace(train.saved_config(tmp_path), epochs=3)
    train.train(text, tmp_path, more, resume=True, progress=False, log=messages.append)
    assert any("resuming after epoch 2" in m for m in messages)
    assert [int(r["epoch"]) for r in _metrics(tmp_path)] == [1, 2, 3]


def test_ctrl_c_saves_and_resume_finishes(tmp_path, text, monkeypatch):
    real = data.training_dataset

    def interrupted_after_two_batches(*args, **kwargs):
        for i, batch in enumerate(real(*args, **kwargs)):
            if i == 2:
                raise KeyboardInterrupt
            yield batch

    monkeypatch.setattr(data, "training_dataset", lambda *a, **k: _Taker(interrupted_after_two_batches(*a, **k)))
    result = train.train(text, tmp_path, SMALL, progress=False, log=lambda *_: None)
    assert result.interrupted and result.epochs_run == 0
    assert (tmp_path / train.CHECKPOINT_DIR / "checkpoint").exists()
    monkeypatch.undo()
    result = train.train(text, tmp_path, SMALL, resume=True, progress=False, log=lambda *_: None)
    assert not result.interrupted and result.epochs_run == 2


class _Taker:
    """Stands in for a tf.data.Dataset: `.take(n)` then iteration."""

    def __init__(self, it):
        self.it = it

    def take(self, _n):
        return self.it


def test_fine_tuning_starts_from_a_model_folder(tmp_path, text):
    train.train(text, tmp_path / "first", SMALL, progress=False, log=lambda *_: None)
    first = _metrics(tmp_path / "first")
    tuned = dataclasses.replace(SMALL, epochs=1, learning_rate=1e-3, init_from=str(tmp_path / "first"))
    train.train(text, tmp_path / "tuned", tuned, progress=False, log=lambda *_: None)
    # it starts where the first run ended, not from scratch
    assert float(_metrics(tmp_path / "tuned")[0]["val_loss"]) < float(first[0]["val_loss"])
    assert bundle.load(tmp_path / "tuned").vocab.chars == bundle.load(tmp_path / "first").vocab.chars


def test_stateful_batches_continue_each_other_row_by_row():
    ids = np.arange(10_000)
    inputs, targets = data.stream_batches(ids, seq_len=100, batch_size=8, offset=3)
    assert inputs.shape == targets.shape == (12, 8, 100)
    assert (targets == inputs + 1).all()  # targets are the inputs shifted by one
    assert (inputs[1:, :, 0] == inputs[:-1, :, -1] + 1).all()  # step s + 1 goes on from step s
    assert inputs[0, 0, 0] == 3 and len(np.unique(inputs)) == inputs.size  # no character twice


def test_stateful_training_makes_the_loss_fall(tmp_path, text):
    cfg = dataclasses.replace(SMALL, stateful=True)
    result = train.train(text, tmp_path, cfg, progress=False, log=lambda *_: None)
    rows = _metrics(tmp_path)
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])
    assert result.best_epoch == 2
    assert train.saved_config(tmp_path).stateful  # --resume goes on the same way


def test_recurrent_dropout_is_for_training_only(tmp_path, text):
    cfg = dataclasses.replace(SMALL, epochs=1, recurrent_dropout=0.3)
    train.train(text, tmp_path, cfg, progress=False, log=lambda *_: None)
    loaded = bundle.load(tmp_path)
    assert loaded.hp.recurrent_dropout == 0.3  # kept with the model, so --resume trains the same way
    ids = loaded.vocab.encode(text[:200])[None, :]
    first, _ = loaded.network(ids)
    again, _ = loaded.network(ids)
    np.testing.assert_array_equal(first, again)  # no dropout when the bot writes


def test_dedup_leaves_the_second_copy_of_a_repeated_block_out_of_each_training_text(tmp_path, text, monkeypatch):
    seen = []
    real = data.training_dataset
    monkeypatch.setattr(data, "training_dataset", lambda ids, *a, **k: seen.append(ids) or real(ids, *a, **k))
    block = text[5_000:6_300]  # 1,300 characters of the novel, written again further on
    doubled = text[:30_000] + block + text[30_000:]
    extra = "La segunda parte, una vez. " * 10
    cfg = dataclasses.replace(SMALL, epochs=1, dedup=True)
    train.train(doubled, tmp_path, cfg, progress=False, log=lambda *_: None, extra_texts=[extra])

    trained = bundle.load(tmp_path).vocab.decode(seen[0])
    train_side, held_out = corpus.split(doubled)
    assert trained.count(block) == 1
    assert len(trained) == len(train_side) - len(block) + 1 + len(extra)
    assert held_out == corpus.split(doubled)[1]  # the held-out tenth is the corpus's own, not shifted
    assert train.saved_config(tmp_path).dedup  # --resume reads the texts the same way


def test_extra_corpus_joins_the_training_side_only(tmp_path, text, monkeypatch):
    extra = "Ó ÚLTIMO capítulo de la segunda parte, que nunca está en el texto apartado. " * 40
    seen = []
    real = data.training_dataset
    monkeypatch.setattr(data, "training_dataset", lambda ids, *a, **k: seen.append(ids) or real(ids, *a, **k))
    cfg = dataclasses.replace(SMALL, epochs=1, extra_corpora=("parte2.txt",))
    train.train(text, tmp_path, cfg, progress=False, log=lambda *_: None, extra_texts=[extra])

    vocab = bundle.load(tmp_path).vocab
    assert vocab.encode("ÓÚ").all()  # the extra text's letters are known
    trained = vocab.decode(seen[0])
    train_side, held_out = corpus.split(text)
    assert trained == train_side + "\n" + extra  # the held-out tenth of the corpus is never trained on
    assert held_out[:200] not in trained
    assert train.saved_config(tmp_path).extra_corpora == ("parte2.txt",)  # --resume reads them again


@pytest.mark.parametrize("argv, says", [
    (["--resume", "--units", "256"], "size a new network"),
    (["--init-from", "model/shipped", "--embedding", "64"], "size a new network"),
    (["--units", "0"], "at least 1"),
    (["--resume", "--dedup"], "not started with --dedup"),
])
def test_train_refuses_options_that_cannot_apply(tmp_path, text, capsys, argv, says):
    from cli.main import main

    train.train(text, tmp_path, dataclasses.replace(SMALL, epochs=1), progress=False, log=lambda *_: None)
    assert main(["train", "--out", str(tmp_path), *argv]) == 2
    assert says in capsys.readouterr().err
    assert _metrics(tmp_path)[-1]["epoch"] == "1"  # the run is left as it was
