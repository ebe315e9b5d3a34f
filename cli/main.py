"""`cervantes <command>`: one entry point, one small function per subcommand."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys

from bot.process.startup import StartupError
from config import ConfigError, load, stray_variables
from cli.ops import cmd_backup, cmd_health, cmd_migrate_storage

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter (CUDA probes)


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow with the C++ side's standard error muted: its absl logger prints CUDA and
    oneDNN notices before any level applies. Python errors still raise; TF_CPP_MIN_LOG_LEVEL below 3
    (e.g. 0 for debugging) keeps everything."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") != "3" or "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow  # noqa: F401
            import keras  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _corpus_text(args, strip_accents: bool) -> str:
    from model import corpus

    return corpus.read(corpus.resolve(args.corpus or args.config.corpus.path), strip_accents=strip_accents)


def _model_dir(args) -> str | None:
    return args.model or args.config.model.path or None


def cmd_download_corpus(args) -> int:
    from model import corpus

    path = corpus.download(args.out)
    print(f"corpus saved to {path}")
    return 0


def cmd_train(args) -> int:
    from model import corpus, train

    given = {k: v for k, v in {
        "epochs": args.epochs, "learning_rate": args.learning_rate, "dropout": args.dropout,
        "recurrent_dropout": args.recurrent_dropout,
        "patience": args.patience, "max_steps_per_epoch": args.max_steps, "init_from": args.init_from,
        "stateful": args.stateful, "dedup": args.dedup, "rnn_units": args.units,
        "embedding_dim": args.embedding,
    }.items() if v is not None}
    if (args.units is not None or args.embedding is not None) and (args.resume or args.init_from):
        print("cervantes train: --units and --embedding size a new network; with --resume or --init-from "
              "the network is the run's or the model's", file=sys.stderr)
        return 2
    if any(size is not None and size < 1 for size in (args.units, args.embedding)):
        print("cervantes train: --units and --embedding must be at least 1", file=sys.stderr)
        return 2
    # --resume goes on with the run's own settings, changed only where an option says so
    base = train.saved_config(args.out) if args.resume else train.TrainConfig()
    if args.resume and args.dedup and not base.dedup:
        print(f"cervantes train: the run in {args.out} was not started with --dedup; its text cannot "
              "change halfway (start a new run)", file=sys.stderr)
        return 2
    cfg = dataclasses.replace(base, **given)
    if args.extra_corpus is not None or not args.resume:
        extra = args.extra_corpus if args.extra_corpus is not None else args.config.corpus.extra
        cfg = dataclasses.replace(cfg, extra_corpora=tuple(str(p) for p in extra))
    strip = args.strip_accents or args.config.corpus.strip_accents
    text = _corpus_text(args, strip)
    extra_texts = [corpus.read(p, strip_accents=strip) for p in cfg.extra_corpora]
    result = train.train(text, args.out, cfg, strip_accents=strip, resume=args.resume,
                         extra_texts=extra_texts)
    if result.best_epoch:
        print(f"best epoch {result.best_epoch}: held-out {result.best_val_loss:.4f} nats/char; "
              f"model in {args.out}")
    return 130 if result.interrupted else 0


def cmd_evaluate(args) -> int:
    from model import bundle, corpus, evaluate
    from model.sampler import Sampler

    try:
        runs = evaluate.settings([float(t) for t in args.temperatures.split(",")],
                                 [int(k) for k in args.top_k.split(",")],
                                 [float(p) for p in args.top_p.split(",")], args.words.split(","))
    except ValueError as exc:
        print(f"cervantes evaluate: --temperatures, --top-k, --top-p and --words take comma lists ({exc})",
              file=sys.stderr)
        return 2
    if args.samples < 0 or args.length < 1:
        print("cervantes evaluate: --samples must be at least 0, --length at least 1", file=sys.stderr)
        return 2
    b = bundle.load(_model_dir(args))
    training, held_out = corpus.split(_corpus_text(args, b.hp.strip_accents))
    figures = evaluate.held_out_figures(b.network, b.vocab, held_out[: args.limit] if args.limit else held_out)
    extra = args.extra_corpus if args.extra_corpus is not None else args.config.corpus.extra
    book = [training, *(corpus.read(p, strip_accents=b.hp.strip_accents) for p in extra)]
    report = evaluate.sample_report(Sampler(b.network, b.vocab, b.lexicon), book, held_out, runs, args.samples,
                                    args.length, args.seed) if args.samples else None
    if report and args.samples_out:
        report.write(args.samples_out)
    if args.json:
        print(json.dumps({**figures, **({"samples": report.to_dict()} if report else {})}, ensure_ascii=False))
    else:
        print(evaluate.summary(figures, report))
    return 0


def cmd_generate(args) -> int:
    from model import bundle, seeds
    from model.sampler import Sampler, generate

    if args.length < 1 or args.samples < 1 or args.temperature < 0:
        print("cervantes: --length and --samples must be at least 1, --temperature at least 0",
              file=sys.stderr)
        return 2
    top_p = args.config.generation.top_p if args.top_p is None else args.top_p
    if not 0 < top_p <= 1:
        print("cervantes: --top-p must be more than 0 and at most 1", file=sys.stderr)
        return 2
    b = bundle.load(_model_dir(args))
    seed = seeds.clean(args.seed_text, b.vocab, b.hp.strip_accents)
    if seed.dropped:
        print(f"(left out, unknown to the model: {seed.dropped!r})", file=sys.stderr)
    try:
        results = generate(Sampler(b.network, b.vocab, b.lexicon), [seed.text] * args.samples, args.length,
                           args.temperature, random_seed=args.seed, top_k=args.top_k, top_p=top_p,
                           words=args.words or args.config.generation.words)
    except ValueError as exc:  # "book" without a lexicon in the model folder
        print(f"cervantes: {exc}", file=sys.stderr)
        return 2
    for i, r in enumerate(results):
        if args.samples > 1:
            print(f"--- {i + 1} ---")
        print(seed.text + r.text)
    return 0


def cmd_lexicon(args) -> int:
    from model import bundle, corpus
    from model.lexicon import Lexicon

    folder = _model_dir(args) or str(bundle.SHIPPED_DIR)
    b = bundle.load(folder)
    training, _ = corpus.split(_corpus_text(args, b.hp.strip_accents))
    extra = args.extra_corpus if args.extra_corpus is not None else args.config.corpus.extra
    texts = [training, *(corpus.read(p, strip_accents=b.hp.strip_accents) for p in extra)]
    lexicon = Lexicon.from_texts(texts, b.vocab)
    path = lexicon.save(folder)
    print(f"{len(lexicon)} words ({lexicon.states} word states) written to {path}")
    return 0


def cmd_chat(args) -> int:
    import asyncio

    from bot.console import adapter as console
    from bot.process import logs
    from bot.process.runtime import open_runtime

    logs.setup(args.config.logging.level, args.config.logging.format)

    async def session() -> None:
        async with open_runtime(args.config) as runtime:
            await console.run(runtime.commands, args.chat_id)

    asyncio.run(session())
    return 0


def cmd_serve(args) -> int:
    """Checks first (a token, or a terminal for the console), then TensorFlow and the model. Any
    failure ends in one `cervantes: ...` line (main); its traceback is logged at DEBUG only."""
    import asyncio

    from bot.process import logs, startup

    logs.setup(args.config.logging.level, args.config.logging.format)
    startup.check(args.config, os.environ, interactive=sys.stdin is not None and sys.stdin.isatty())
    _import_tensorflow_quietly()
    from bot.process.serve import serve

    try:
        asyncio.run(serve(args.config, os.environ))
    except StartupError:
        raise
    except Exception as exc:  # the model, the device, the database
        logging.getLogger("cervantes").debug("serve failed", exc_info=True)
        raise StartupError(startup.blank_tokens(f"serve failed: {type(exc).__name__}: {exc}", os.environ)) from None
    return 0


def cmd_loadtest(args) -> int:
    import asyncio

    from cli import loadtest
    from storage import StorageError

    try:
        rounds = asyncio.run(loadtest.run(args.config, args.chats, args.commands, args.rounds, args.storage_url))
    except StorageError as exc:
        print(f"cervantes: loadtest: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(rounds, indent=1))
    else:
        for i, r in enumerate(rounds, 1):
            print(f"round {i}: {r['answered']}/{r['commands']} answered, exactly once: {r['exactly_once']}, "
                  f"misrouted: {r['misrouted']}, p50 {r['p50_s']:.2f} s, p95 {r['p95_s']:.2f} s, "
                  f"p99 {r['p99_s']:.2f} s, {r['commands_per_s']:.1f} commands/s, "
                  f"peak memory {r['peak_rss_mib']:.0f} MiB")
    return 0 if all(r["exactly_once"] and not r["misrouted"] for r in rounds) else 1


def cmd_export(args) -> int:
    from model import bundle
    from model.export import export
    from model.sampler import Sampler

    b = bundle.load(_model_dir(args))
    print(f"SavedModel written to {export(Sampler(b.network, b.vocab), args.out)}")
    return 0


def cmd_bench(args) -> int:
    from cli import bench
    from model import bundle

    results = bench.run(bundle.load(_model_dir(args)), quick=args.quick, generation=args.config.generation)
    print(json.dumps(results, indent=1) if args.json else bench.table(results))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cervantes", description="A bot that writes like Cervantes.")
    p.add_argument("--config", metavar="PATH", help="config file (default: ./config.toml if present)")
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
    t.add_argument("--dropout", type=float, help="on the embeddings and the GRU outputs")
    t.add_argument("--recurrent-dropout", type=float, help="on the GRU state inside the recurrence")
    t.add_argument("--patience", type=int, help="early stopping: epochs without improvement")
    t.add_argument("--stateful", action="store_true", default=None,
                   help="carry the GRU state from batch to batch over contiguous streams")
    t.add_argument("--max-steps", type=int, help="batches per epoch at most (quick runs)")
    t.add_argument("--init-from", metavar="DIR", help="start from this model folder's weights (fine-tuning)")
    t.add_argument("--units", type=int, help="GRU units of a new network (default 512)")
    t.add_argument("--embedding", type=int, help="embedding size of a new network (default 128)")
    t.add_argument("--dedup", action="store_true", default=None,
                   help="leave out the later copy of every block of 1,000+ characters a training text "
                        "holds twice (the first part's chapter 30)")
    t.add_argument("--extra-corpus", metavar="PATH", action="append",
                   help="more text for the training side only (repeatable; the held-out part "
                        "stays the last 10%% of --corpus)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="held-out loss (last 10%%) in nats and bits per character, "
                                        "also without a duplicated block (dedup); samples' quality")
    e.add_argument("--model", help="model folder (default: the shipped model)")
    e.add_argument("--corpus", help="the text (default: the downloaded copy)")
    e.add_argument("--limit", type=int, help="score only the first N held-out characters (the samples' "
                                             "reference row still reads them all)")
    e.add_argument("--json", action="store_true")
    e.add_argument("--samples", type=int, default=0, metavar="N",
                   help="also write N samples per setting and measure them against the training text")
    e.add_argument("--temperatures", default="0.3,0.5,0.7,1.0", help="comma list (default 0.3,0.5,0.7,1.0)")
    e.add_argument("--top-k", default="0", metavar="K[,K]", help="also each temperature with top-k K")
    e.add_argument("--top-p", default="1", metavar="P[,P]", help="also each temperature with nucleus P")
    e.add_argument("--words", default="free", metavar="free,book",
                   help="every setting with each: free, or only the book's words (default free)")
    e.add_argument("--extra-corpus", metavar="PATH", action="append",
                   help="more training-side text the samples are measured against (repeatable; "
                        "default [corpus] extra)")
    e.add_argument("--length", type=int, default=300, help="characters per sample (default 300)")
    e.add_argument("--seed", type=int, default=0, help="random seed for the seeds and the sampling")
    e.add_argument("--samples-out", metavar="PATH", help="write the samples to this text file")
    e.set_defaults(func=cmd_evaluate)

    g = sub.add_parser("generate", help="continue a seed with the model")
    g.add_argument("seed_text", nargs="?", default="", help="the opening (default: a line of the novel)")
    g.add_argument("--length", type=int, default=300, help="characters to add (default 300)")
    g.add_argument("--temperature", type=float, default=0.5, help="0 is greedy; higher is bolder")
    g.add_argument("--seed", type=int, help="random seed, for a reproducible text")
    g.add_argument("--samples", type=int, default=1, help="how many continuations")
    g.add_argument("--top-k", type=int, default=0, help="sample among the k likeliest only")
    g.add_argument("--top-p", type=float, help="sample among the likeliest that make up this "
                                               "probability (default [generation] top_p)")
    g.add_argument("--words", choices=["free", "book"],
                   help="book: only words the novel uses (default [generation] words)")
    g.add_argument("--model", help="model folder (default: the shipped model)")
    g.set_defaults(func=cmd_generate)

    w = sub.add_parser("lexicon", help="write a model folder's lexicon.txt.gz: every word of the training "
                                       "side, for [generation] words = \"book\"")
    w.add_argument("--model", help="model folder (default: the shipped model)")
    w.add_argument("--corpus", help="the text (default: the downloaded copy); its first 90%% is read")
    w.add_argument("--extra-corpus", metavar="PATH", action="append",
                   help="more training-side text (repeatable; default [corpus] extra)")
    w.set_defaults(func=cmd_lexicon)

    c = sub.add_parser("chat", help="talk to the bot in this terminal (no token needed)")
    c.add_argument("--chat-id", default="local", help="which chat's settings to use (default: local)")
    c.set_defaults(func=cmd_chat)

    s = sub.add_parser("serve", help="run the Telegram and Discord adapters whose tokens are set "
                                     "(TELEGRAM_TOKEN, DISCORD_TOKEN); the console when none is, "
                                     "on a terminal")
    s.set_defaults(func=cmd_serve, tensorflow=False)  # imported once the tokens are checked

    lt = sub.add_parser("loadtest", help="simulated chats through the real commands, service and database")
    lt.add_argument("--chats", type=int, default=200)
    lt.add_argument("--commands", type=int, default=5, help="commands per chat")
    lt.add_argument("--rounds", type=int, default=3, help="repeat, to see memory growth")
    lt.add_argument("--storage-url", default="", metavar="URL",
                    help="run on this PostgreSQL database (postgresql://user@host:port/dbname; password: "
                         "PGPASSWORD or PGPASSFILE) instead of a temporary SQLite file. The load writes test "
                         "chats into it: a throwaway database, refused unless empty, emptied afterwards. "
                         "[storage] url is never used")
    lt.add_argument("--json", action="store_true")
    lt.set_defaults(func=cmd_loadtest)

    x = sub.add_parser("export", help="write a SavedModel with a generating serving signature")
    x.add_argument("--out", required=True, help="folder to write")
    x.add_argument("--model", help="model folder (default: the shipped model)")
    x.set_defaults(func=cmd_export)

    h = sub.add_parser("health", help="whether the running serve works: model, generation worker, "
                                      "adapters connected (from its status file); exit 1 if not")
    h.set_defaults(func=cmd_health, tensorflow=False)

    k = sub.add_parser("backup", help="copy the database, safely while the bot runs")
    k.add_argument("path", help="the file to write")
    k.set_defaults(func=cmd_backup, tensorflow=False)

    m = sub.add_parser("migrate-storage", help="copy the SQLite database ([storage] path) into an empty "
                                               "PostgreSQL database, and check the row counts")
    m.add_argument("--to", required=True, metavar="URL",
                   help="postgresql://user@host:port/dbname (password: PGPASSWORD or PGPASSFILE; "
                        "'-' reads the whole URL from standard input)")
    m.set_defaults(func=cmd_migrate_storage, tensorflow=False)

    b = sub.add_parser("bench", help="characters per second and latency against the notebook's way")
    b.add_argument("--quick", action="store_true", help="fewer repeats")
    b.add_argument("--json", action="store_true")
    b.add_argument("--model", help="model folder (default: the shipped model)")
    b.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    errors: tuple = (ConfigError, FileNotFoundError)
    try:
        args.config = load(args.config)
        for warning in stray_variables(os.environ):
            print(f"cervantes: warning: {warning}", file=sys.stderr)
        if getattr(args, "tensorflow", True):
            _import_tensorflow_quietly()
            from model.bundle import ModelFolderError
            from model.corpus import CorpusError

            errors += (ModelFolderError, CorpusError)
        return args.func(args)
    except StartupError as exc:
        print(f"cervantes: {exc}", file=sys.stderr)
        return 1
    except errors as exc:
        print(f"cervantes: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
