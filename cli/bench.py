"""`cervantes bench`: characters per second and latency, measured against the notebook's way.

(a) the notebook's approach: a one-step model called once per character from Python, the seed
    re-split into strings and looked up each call, one stream of 1,000 characters;
(b) our sampler, one stream of 1,000 characters in one compiled call;
(c) the generation service with 8 and 64 concurrent requests of 300 characters, and, for scale, the
    sampler alone writing the same 64 rows in one call (what the service could reach at best).
Each figure is also given as a ratio to (a), measured in the same run on the same machine.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import numpy as np
import tensorflow as tf

from model.bundle import Bundle
from model.sampler import Sampler, generate
from service.generation import GenerationService

SEEDS = ["Sancho dijo", "En un lugar de la Mancha", "Dulcinea", "Rocinante", "¿Qué gigantes?",
         "Don Quijote", "La aventura", "Mire vuestra merced"]


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


def _rate(fn, chars: int, repeats: int) -> float:
    fn()  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return chars / statistics.median(times)


async def _concurrent(sampler: Sampler, n: int, length: int, rounds: int, chunk_steps: int) -> dict:
    async with GenerationService(sampler, max_batch=64, chunk_steps=chunk_steps,
                                 queue_size=max(256, n)) as service:
        async def one(i: int, r: int) -> float:
            # each round mixes the seeds differently, as real traffic would: a model call that
            # compiled again for every new set of seed lengths would show here
            start = time.perf_counter()
            await service.generate(_seed(i, r), temperature=0.5, length=length)
            return time.perf_counter() - start

        await asyncio.gather(*(one(i, 0) for i in range(n)))  # one unmeasured round: XLA compiles its shapes
        walls, latencies = [], []
        for r in range(1, rounds + 1):
            start = time.perf_counter()
            latencies += await asyncio.gather(*(one(i, r) for i in range(n)))
            walls.append(time.perf_counter() - start)
    return {"chars_per_s": n * length / statistics.median(walls),
            "p50_s": float(np.percentile(latencies, 50)), "p95_s": float(np.percentile(latencies, 95))}


def run(b: Bundle, quick: bool = False, chunk_steps: int = 100) -> dict:
    length = 300
    repeats, rounds = (2, 2) if quick else (5, 4)
    notebook = NotebookOneStep(b)
    sampler = Sampler(b.network, b.vocab)
    stream = 1000  # one stream writes 1,000 characters, as in the notebook
    results = {
        "notebook_one_stream": {"chars_per_s": _rate(lambda: notebook.generate("Sancho", stream), stream, repeats)},
        "sampler_one_stream": {"chars_per_s": _rate(
            lambda: generate(sampler, ["Sancho"], stream, 0.5), stream, repeats)},
    }
    rows = [_seed(i) for i in range(64)]
    results["sampler_64_rows_one_call"] = {"chars_per_s": _rate(
        lambda: generate(sampler, rows, length, 0.5), 64 * length, repeats)}
    for n in (8, 64):
        results[f"service_{n}_concurrent"] = asyncio.run(_concurrent(sampler, n, length, rounds, chunk_steps))
    base = results["notebook_one_stream"]["chars_per_s"]
    for figures in results.values():
        figures["ratio_to_notebook"] = figures["chars_per_s"] / base
    return results


def table(results: dict) -> str:
    lines = ["| measure | characters/s | × notebook | p50 latency | p95 latency |", "|---|---:|---:|---:|---:|"]
    for name, f in results.items():
        p50 = f"{f['p50_s']:.2f} s" if "p50_s" in f else ""
        p95 = f"{f['p95_s']:.2f} s" if "p95_s" in f else ""
        lines.append(f"| {name} | {f['chars_per_s']:,.0f} | {f['ratio_to_notebook']:.1f} | {p50} | {p95} |")
    return "\n".join(lines)
