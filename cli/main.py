"""`cervantes <command>`: one entry point, one small function per subcommand."""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter


def _corpus_text(args, strip_accents: bool) -> str:
    from model import corpus

    return corpus.read(corpus.resolve(args.corpus), strip_accents=strip_accents)


def cmd_download_corpus(args) -> int:
    from model import corpus

    path = corpus.download(args.out)
    print(f"corpus saved to {path}")
    return 0


def cmd_train(args) -> int:
    from model import train

    cfg = train.TrainConfig(
        **{k: v for k, v in {
            "epochs": args.epochs, "learning_rate": args.learning_rate, "dropout": args.dropout,
            "patience": args.patience, "max_steps_per_epoch": args.max_steps,
        }.items() if v is not None}
    )
    text = _corpus_text(args, args.strip_accents)
    result = train.train(text, args.out, cfg, strip_accents=args.strip_accents, resume=args.resume)
    if result.best_epoch:
        print(f"best epoch {result.best_epoch}: held-out {result.best_val_loss:.4f} nats/char; "
              f"model in {args.out}")
    return 130 if result.interrupted else 0


def cmd_evaluate(args) -> int:
    from model import bundle, corpus
    from model.evaluate import held_out_loss

    b = bundle.load(args.model)
    text = _corpus_text(args, b.hp.strip_accents)
    _, held_out = corpus.split(text)
    if args.limit:
        held_out = held_out[: args.limit]
    result = held_out_loss(b.network, b.vocab.encode(held_out))
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(f"held-out loss over {result.characters} characters: "
              f"{result.nats_per_char:.4f} nats/char, {result.bits_per_char:.4f} bits/char")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cervantes", description="A bot that writes like Cervantes.")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("download-corpus", help="fetch the training text into the cache folder")
    d.add_argument("--out", help="where to save it (default: the cache folder)")
    d.set_defaults(func=cmd_download_corpus)

    t = sub.add_parser("train", help="train the GRU; checkpoints every epoch")
    t.add_argument("--corpus", help="the text to train on (default: the downloaded copy)")
    t.add_argument("--epochs", type=int)
    t.add_argument("--out", default="runs/latest", help="the run folder (default: runs/latest)")
    t.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    t.add_argument("--strip-accents", action="store_true", help="the notebook's normalization")
    t.add_argument("--learning-rate", type=float)
    t.add_argument("--dropout", type=float)
    t.add_argument("--patience", type=int, help="early stopping: epochs without improvement")
    t.add_argument("--max-steps", type=int, help="batches per epoch at most (quick runs)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="held-out loss (last 10%%) in nats and bits per character")
    e.add_argument("--model", help="model folder (default: the shipped model)")
    e.add_argument("--corpus", help="the text (default: the downloaded copy)")
    e.add_argument("--limit", type=int, help="only the first N held-out characters")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_evaluate)
    return p


def main(argv: list[str] | None = None) -> int:
    from model.bundle import ModelFolderError
    from model.corpus import CorpusError

    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (CorpusError, ModelFolderError, FileNotFoundError) as exc:
        print(f"cervantes: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
