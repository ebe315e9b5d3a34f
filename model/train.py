"""Training: Adam on cross-entropy through a GradientTape step, a checkpoint every epoch, the best
epoch by held-out loss kept as the result, a metrics log and a plot."""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from model import bundle, corpus, data
from model.lexicon import Lexicon
from model.evaluate import held_out_loss
from model.network import Hyperparameters, build
from model.vocab import Vocab

METRICS_FILE = "metrics.csv"
PLOT_FILE = "loss.png"
TRAINING_FILE = "training.json"
CHECKPOINT_DIR = "checkpoints"


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    learning_rate: float = 3e-3  # peak; cosine decay to final_lr_fraction of it over all epochs
    final_lr_fraction: float = 0.03
    dropout: float = 0.35
    recurrent_dropout: float = 0.15  # on the GRU state inside the recurrence
    clipnorm: float = 1.0  # global gradient norm clip; a GRU without it can blow up early on
    patience: int = 4  # stop after this many epochs without a better held-out loss
    seq_len: int = data.SEQ_LEN
    batch_size: int = data.BATCH_SIZE
    shuffle_buffer: int = data.SHUFFLE_BUFFER
    shift_windows: bool = True  # start each epoch's windows at a new offset
    stateful: bool = False  # contiguous streams, the GRU state carried from batch to batch
    seed: int = 42
    max_steps_per_epoch: int | None = None  # for quick runs and tests
    embedding_dim: int = 128
    rnn_units: int = 512
    init_from: str | None = None  # a model folder whose weights (and vocabulary) start the run
    extra_corpora: tuple[str, ...] = ()  # texts added to the training side only (paths, for --resume)
    dedup: bool = False  # leave the later copy of every block of 1,000+ characters a training text holds twice out


@dataclass
class Result:
    best_epoch: int
    best_val_loss: float
    epochs_run: int
    interrupted: bool
    history: list[dict]


def _steps_per_epoch(n_train: int, cfg: TrainConfig) -> int:
    steps = (n_train - cfg.seq_len) // (cfg.seq_len + 1) // cfg.batch_size
    return min(steps, cfg.max_steps_per_epoch) if cfg.max_steps_per_epoch else steps


def _read_history(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as f:
        return [{k: int(v) if k == "epoch" else float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _write_history(path: Path, history: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def plot(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [int(h["epoch"]) for h in history]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(epochs, [h["train_loss"] / math.log(2) for h in history], "o-", label="training")
    ax.plot(epochs, [h["val_loss"] / math.log(2) for h in history], "o-", label="held-out (last 10%)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("bits per character")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def saved_config(out_dir: str | Path) -> TrainConfig:
    """The training settings a run folder was started with: what --resume continues with."""
    path = Path(out_dir) / TRAINING_FILE
    if not path.exists():
        raise FileNotFoundError(f"nothing to resume in {out_dir}: no {TRAINING_FILE}")
    saved = json.loads(path.read_text())
    saved["extra_corpora"] = tuple(saved.get("extra_corpora", ()))
    return TrainConfig(**saved)


def _deduplicated(text: str, log) -> str:
    from model.evaluate import without_duplicates

    kept, spans = without_duplicates(text)
    for start, end in spans:
        log(f"dedup: left out characters {start} to {end} ({end - start:,}), a copy of an earlier block")
    return kept


def train(text: str, out_dir: str | Path, cfg: TrainConfig, strip_accents: bool = False,
          resume: bool = False, progress: bool = True, log=print,
          extra_texts: list[str] | tuple[str, ...] = ()) -> Result:
    """Train on the first 90% of `text` (already normalized), validate on the last 10%.

    `extra_texts` (normalized like `text`) join the training side only, each after a newline: the
    held-out part stays the last 10% of `text`, so figures stay comparable with the notebook's.
    With cfg.dedup, each training text is read without the later copy of a block it holds twice.

    With `resume`, the network and vocabulary come from the run folder and training goes on from
    its last checkpoint; `cfg` should be `saved_config(out_dir)`, changed only where meant
    (more epochs, more patience): the learning-rate schedule follows cfg.epochs.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_text, val_text = corpus.split(text)
    sides = [train_text, *extra_texts]
    if cfg.dedup:  # each text on its own (the first part's training side holds chapter 30 twice)
        sides = [_deduplicated(side, log) for side in sides]
    train_text = "\n".join(sides)

    if resume:
        if not (out / bundle.CONFIG_FILE).exists():
            raise FileNotFoundError(f"nothing to resume in {out}: no {bundle.CONFIG_FILE}")
        vocab = Vocab.load(out / bundle.VOCAB_FILE)
        hp = Hyperparameters(**json.loads((out / bundle.CONFIG_FILE).read_text()))
    elif cfg.init_from:  # fine-tuning: the starting model's vocabulary and sizes, our dropout
        start = bundle.load(cfg.init_from)
        if start.hp.strip_accents != strip_accents:
            raise ValueError(f"{cfg.init_from} was trained with strip_accents={start.hp.strip_accents}")
        vocab = start.vocab
        hp = Hyperparameters(len(vocab), start.hp.embedding_dim, start.hp.rnn_units, cfg.dropout,
                             cfg.recurrent_dropout, strip_accents)
    else:
        vocab = Vocab.from_text("\n".join([text, *extra_texts]))
        hp = Hyperparameters(len(vocab), cfg.embedding_dim, cfg.rnn_units, cfg.dropout,
                             cfg.recurrent_dropout, strip_accents)
    (out / TRAINING_FILE).write_text(json.dumps(asdict(cfg), indent=1) + "\n")
    # the training side's words, each text read on its own, for words = "book"
    Lexicon.from_texts([corpus.split(text)[0], *extra_texts], vocab).save(out)

    tf.keras.utils.set_random_seed(cfg.seed)
    train_ids, val_ids = vocab.encode(train_text), vocab.encode(val_text)
    network = build(hp)
    if cfg.init_from and not resume:
        network.load_weights(str(Path(cfg.init_from) / bundle.WEIGHTS_FILE))
    steps = _steps_per_epoch(len(train_ids), cfg)
    schedule = tf.keras.optimizers.schedules.CosineDecay(
        cfg.learning_rate, decay_steps=max(1, cfg.epochs * steps), alpha=cfg.final_lr_fraction)
    optimizer = tf.keras.optimizers.Adam(schedule, global_clipnorm=cfg.clipnorm)
    optimizer.build(network.trainable_variables)
    epoch_var = tf.Variable(0, dtype=tf.int64)  # epochs completed
    best_var = tf.Variable(math.inf, dtype=tf.float64)  # best held-out loss so far
    best_epoch_var = tf.Variable(0, dtype=tf.int64)
    ckpt = tf.train.Checkpoint(model=network, optimizer=optimizer, epoch=epoch_var,
                               best=best_var, best_epoch=best_epoch_var)
    manager = tf.train.CheckpointManager(ckpt, out / CHECKPOINT_DIR, max_to_keep=2)
    if resume and manager.latest_checkpoint:
        ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        log(f"resuming after epoch {int(epoch_var)} from {manager.latest_checkpoint}")
    elif not resume:
        bundle.save(out, network, vocab)  # a loadable folder from the start

    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def train_step(x, y, state):
        with tf.GradientTape() as tape:
            logits, state = network(x, state, training=True)  # [batch, seq_len, vocab]
            loss = loss_fn(y, logits)
        grads = tape.gradient(loss, network.trainable_variables)
        optimizer.apply_gradients(zip(grads, network.trainable_variables))
        return loss, tf.stop_gradient(state)

    zeros = tf.zeros([cfg.batch_size, hp.rnn_units])

    history = _read_history(out / METRICS_FILE)[: int(epoch_var)]
    interrupted = False
    rng = np.random.default_rng(cfg.seed)
    offsets = rng.integers(0, cfg.seq_len + 1, size=cfg.epochs + 1)
    while int(epoch_var) < cfg.epochs:
        epoch = int(epoch_var) + 1
        offset = int(offsets[epoch]) if cfg.shift_windows else 0
        if cfg.stateful:  # in order: each batch continues the one before, row by row
            inputs, targets = data.stream_batches(train_ids, cfg.seq_len, cfg.batch_size, offset)
            dataset = list(zip(inputs, targets))[:steps]
        else:
            dataset = data.training_dataset(train_ids, cfg.seq_len, cfg.batch_size,
                                            cfg.shuffle_buffer, offset=offset,
                                            seed=cfg.seed + epoch).take(steps)
        start, total, count = time.time(), 0.0, 0
        bar = tqdm(dataset, total=steps, desc=f"epoch {epoch}/{cfg.epochs}", disable=not progress,
                   unit="batch", dynamic_ncols=True)
        state = zeros
        try:
            for x, y in bar:
                loss, carried = train_step(x, y, state)
                state = carried if cfg.stateful else zeros
                total += float(loss)
                count += 1
                bar.set_postfix(loss=f"{total / count:.4f}")
        except KeyboardInterrupt:
            bar.close()
            manager.save()
            log(f"interrupted in epoch {epoch}: checkpoint saved in {out / CHECKPOINT_DIR}; "
                f"continue with --resume")
            interrupted = True
            break
        bar.close()
        val = held_out_loss(network, val_ids).nats_per_char
        record = {"epoch": epoch, "train_loss": total / max(count, 1), "val_loss": val,
                  "val_bits_per_char": val / math.log(2), "seconds": time.time() - start,
                  "learning_rate": float(schedule(optimizer.iterations))}
        history.append(record)
        epoch_var.assign(epoch)
        if val < float(best_var):
            best_var.assign(val)
            best_epoch_var.assign(epoch)
            bundle.save(out, network, vocab)
        manager.save()
        _write_history(out / METRICS_FILE, history)
        plot(history, out / PLOT_FILE)
        log(f"epoch {epoch}: train {record['train_loss']:.4f}, held-out {val:.4f} nats/char "
            f"({record['val_bits_per_char']:.4f} bits/char), {record['seconds']:.0f} s")
        if epoch - int(best_epoch_var) >= cfg.patience:
            log(f"no better held-out loss for {cfg.patience} epochs: stopping early")
            break
    return Result(int(best_epoch_var), float(best_var), int(epoch_var), interrupted, history)
