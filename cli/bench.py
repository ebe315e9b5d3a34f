"""`cervantes bench`: characters per second and latency, measured against the notebook's way.

(a) the notebook's approach: a one-step model called once per character from Python, the seed
    re-split into strings and looked up each call, one stream of 1,000 characters;
(b) our sampler, one stream of 1,000 characters in one compiled call, and 8 and 64 rows of 300
    characters in one call (what one call of the service does with 8 or 64 requests), each with every
    character allowed ("free") and with the book's words only ("book"), the two timed in turn;
(c) the generation service as configured ([generation]: batch, wait, chunk, top-k, top-p, words),
    warmed as `serve` warms it (split as configured: 8 rows as two half calls on a CPU): one long
    stream of 3,000 characters, and 8 and 64 concurrent requests of 300 characters.
Each figure is also given as a ratio to (a), measured in the same run on the same machine. `goals`
holds the constraint's cost (book / free, timed in turn) and the service's ratios to the sampler
alone in the service's words mode, each the median over rounds of a ratio taken at one moment;
the 8 rows' call is timed again in the 8 concurrent requests' rounds, as their reference: one
call of all 8 rows (the service's share of it is above 1 where split's two half calls beat it).
"""

from __future__ import annotations

import asyncio
import statistics
import time

import numpy as np
import tensorflow as tf

from config import GenerationSection
from model.bundle import Bundle
from model.sampler import Sampler, generate
from service.generation import GenerationService, split_by_default

SEEDS = ["Sancho dijo", "En un lugar de la Mancha", "Dulcinea", "Rocinante", "¿Qué gigantes?",
         "Don Quijote", "La aventura", "Mire vuestra merced"]
STREAM = 1000  # one stream writes 1,000 characters, as in the notebook
LONG_STREAM = 3000  # the service's one long stream
LENGTH = 300  # each concurrent request


class NotebookOneStep:
    """The notebook's generator, rebuilt as the reference: strings in, one character out per call."""

    def __init__(self, b: Bundle, temperature: float = 1.0):
        self.network, self.temperature = b.network, temperature
        self.to_ids = tf.keras.layers.StringLookup(vocabulary=b.vocab.chars, mask_token=None)
        self.to_chars = tf.keras.layers.StringLookup(vocabulary=b.vocab.chars, mask_token=None, invert=True)
        mask = np.zeros(len(b.vocab), np.float32)
        mask[0] = -np.inf  # never the unknown id
        self.mask = tf.constant(mask)

    @tf.function
    def step(self, inputs, state):
        ids = self.to_ids(tf.strings.unicode_split(inputs, "UTF-8")).to_tensor()
        logits, state = self.network(ids, state=state)
        logits = logits[:, -1, :] / self.temperature + self.mask
        next_ids = tf.squeeze(tf.random.categorical(logits, num_samples=1), -1)
        return self.to_chars(next_ids), state

    def generate(self, seed: str, length: int) -> str:
        chars, state, out = tf.constant([seed]), tf.zeros([1, self.network.hp.rnn_units]), []
        for _ in range(length):
            chars, state = self.step(chars, state)
            out.append(chars)
        return tf.strings.join(out)[0].numpy().decode("utf-8")


def _seed(i: int, mix: int = 0) -> str:
    """Row i's seed; each `mix` orders the same seeds differently in every block of len(SEEDS) rows."""
    return SEEDS[(i + mix * (i // len(SEEDS))) % len(SEEDS)]


def _rates(fns: dict, chars: int, repeats: int) -> dict:
    """Characters per second of each function, the median of `repeats` timings taken in turn (so a
    slower moment of a shared machine falls on all of them alike), after one unmeasured call each."""
    for fn in fns.values():
        fn()  # compile
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: {"chars_per_s": chars / statistics.median(t)} for name, t in times.items()}


async def _service(sampler: Sampler, g: GenerationSection, split: bool, rounds: int) -> dict:
    """The service's figures, each round timed right after its reference (the sampler alone, in the
    service's words mode), so that each goal's ratio is taken at one moment of the machine."""
    results, ratios = {}, {}
    one_stream = lambda: generate(sampler, ["Sancho"], LONG_STREAM, 0.5, words=g.words)  # noqa: E731
    rows = [_seed(i) for i in range(64)]
    rows_call = lambda: generate(sampler, rows, LENGTH, 0.5, words=g.words)  # noqa: E731
    eight_rows = lambda: generate(sampler, rows[:8], LENGTH, 0.5, words=g.words)  # noqa: E731
    async with GenerationService(sampler, max_batch=g.max_batch, max_wait_ms=g.max_wait_ms,
                                 chunk_steps=g.chunk_steps, queue_size=max(256, g.queue_size),
                                 top_k=g.top_k, top_p=g.top_p, words=g.words, split=split) as service:
        started = time.perf_counter()
        await service.warm()  # every shape, as serve compiles them before it answers
        results["service_warm_s"] = time.perf_counter() - started

        async def one(i: int, r: int, length: int) -> float:
            # each round mixes the seeds differently, as real traffic would: a model call that
            # compiled again for every new set of seed lengths would show here
            start = time.perf_counter()
            await service.generate(_seed(i, r), temperature=0.5, length=length)
            return time.perf_counter() - start

        for n, length, reference, ref_chars in ((1, LONG_STREAM, one_stream, LONG_STREAM),
                                                (8, LENGTH, one_stream, LONG_STREAM),
                                                (64, LENGTH, rows_call, 64 * LENGTH)):
            reference()
            if n == 8:
                eight_rows()
            await asyncio.gather(*(one(i, 0, length) for i in range(n)))  # unmeasured
            walls, latencies, paired, one_call, share = [], [], [], [], []
            for r in range(1, rounds + 1):
                start = time.perf_counter()
                reference()
                alone = ref_chars / (time.perf_counter() - start)
                if n == 8:  # the reference in the same round: 8 rows in one sampler call
                    start = time.perf_counter()
                    eight_rows()
                    one_call.append(8 * LENGTH / (time.perf_counter() - start) / alone)
                start = time.perf_counter()
                latencies += await asyncio.gather(*(one(i, r, length) for i in range(n)))
                walls.append(time.perf_counter() - start)
                paired.append(n * length / walls[-1] / alone)
                if n == 8:
                    share.append(paired[-1] / one_call[-1])
            name = "service_one_long_stream" if n == 1 else f"service_{n}_concurrent"
            results[name] = {"chars_per_s": n * length / statistics.median(walls),
                             "p50_s": float(np.percentile(latencies, 50)),
                             "p95_s": float(np.percentile(latencies, 95))}
            ratios[name] = statistics.median(paired)
            if n == 8:
                ratios["one_call_8"], ratios["share_8"] = statistics.median(one_call), statistics.median(share)
    return results, ratios


def run(b: Bundle, quick: bool = False, generation: GenerationSection | None = None) -> dict:
    g = generation or GenerationSection()
    repeats, rounds = (2, 3) if quick else (5, 8)
    notebook = NotebookOneStep(b)
    sampler = Sampler(b.network, b.vocab, b.lexicon)
    modes = ("free", "book") if b.lexicon is not None else ("free",)
    results = _rates({"notebook_one_stream": lambda: notebook.generate("Sancho", STREAM)}, STREAM, repeats)
    results |= _rates({f"sampler_one_stream_{w}": (lambda w=w: generate(sampler, ["Sancho"], STREAM, 0.5, words=w))
                       for w in modes}, STREAM, repeats)
    rows = [_seed(i) for i in range(64)]
    for n in (8, 64):  # what one call does with 8 or 64 requests
        results |= _rates({f"sampler_{n}_rows_one_call_{w}": (lambda w=w, n=n: generate(sampler, rows[:n], LENGTH, 0.5, words=w))
                           for w in modes}, n * LENGTH, repeats)
    split = split_by_default(g.split)
    service, paired = asyncio.run(_service(sampler, g, split, rounds))
    warm_s = service.pop("service_warm_s")
    results |= service
    base = results["notebook_one_stream"]["chars_per_s"]
    for figures in results.values():
        figures["ratio_to_notebook"] = figures["chars_per_s"] / base

    def rate(name: str) -> float:
        return results[name]["chars_per_s"]

    goals = {  # the service's ratios paired round by round with the sampler alone (see _service)
        f"service_one_long_stream / sampler one stream, {g.words} (>= 0.8)": paired["service_one_long_stream"],
        f"service_8_concurrent / sampler one stream, {g.words} (>= 1.6)": paired["service_8_concurrent"],
        f"service_64_concurrent / sampler 64 rows in one call, {g.words} (>= 0.95)":
            paired["service_64_concurrent"],
    }
    # what the machine allows the 8-concurrent goal, in the same rounds: 8 rows in one sampler call
    # (their seeds primed first) against one stream, and the service's share of that
    goals[f"(one call) sampler 8 rows in one call / sampler one stream, {g.words}"] = paired["one_call_8"]
    goals["(share) service_8_concurrent / sampler 8 rows in one call"] = paired["share_8"]
    if "book" in modes:
        goals["sampler_one_stream book / free (>= 0.9)"] = rate("sampler_one_stream_book") / rate("sampler_one_stream_free")
        goals["sampler_64_rows_one_call book / free (>= 0.9)"] = (rate("sampler_64_rows_one_call_book")
                                                                  / rate("sampler_64_rows_one_call_free"))
    results["goals"] = {name: round(ratio, 3) for name, ratio in goals.items()}
    results["service"] = {"words": g.words, "top_p": g.top_p, "max_batch": g.max_batch,
                          "chunk_steps": g.chunk_steps, "max_wait_ms": g.max_wait_ms, "split": split,
                          "warm_s": round(warm_s, 2)}
    return results


def table(results: dict) -> str:
    lines = ["| measure | characters/s | × notebook | p50 latency | p95 latency |", "|---|---:|---:|---:|---:|"]
    for name, f in results.items():
        if "chars_per_s" not in f:
            continue
        p50 = f"{f['p50_s']:.2f} s" if "p50_s" in f else ""
        p95 = f"{f['p95_s']:.2f} s" if "p95_s" in f else ""
        lines.append(f"| {name} | {f['chars_per_s']:,.0f} | {f['ratio_to_notebook']:.1f} | {p50} | {p95} |")
    lines += ["", f"service: {results['service']}", ""]
    lines += [f"{name}: {ratio:.3f}" for name, ratio in results["goals"].items()]
    return "\n".join(lines)
