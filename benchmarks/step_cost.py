"""What one step of the sampler costs at 1, 8 and 64 rows: what one call of n rows can reach.

    .venv/bin/python benchmarks/step_cost.py [--rounds 6] [--steps 300] [--json]

The shipped model, the book's words, temperature 0.8: per round and per batch size, one
`Sampler.sample` call of `steps` steps, the sizes timed in turn (so a slower moment of the shared
machine falls on all of them alike), after one unmeasured call each (XLA compiles it). Reports the
median time per step at each size, and per size n the ratio n × (step at 1 row) / (step at n
rows), each taken within one round: how many times one stream's characters/s n rows in one call
write. The service's n concurrent requests in one call cannot beat that ratio; with
`[generation] split` (two half calls side by side, benchmarks/split_calls.py) they can.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

SIZES = (1, 8, 64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from model import bundle
    from model.sampler import Sampler

    loaded = bundle.load()
    sampler = Sampler(loaded.network, loaded.vocab, loaded.lexicon)

    def call(rows: int):
        words = sampler.word_states(["Sancho"] * rows, "book")
        last, states = np.full(rows, loaded.vocab.id_of("o"), np.int32), sampler.zero_state(rows)
        return lambda: sampler.sample(last, states, np.full(rows, 0.8, np.float32), args.steps, words=words)

    calls = {rows: call(rows) for rows in SIZES}
    for fn in calls.values():
        fn()  # compile
    per_step = {rows: [] for rows in SIZES}
    for _ in range(args.rounds):
        for rows, fn in calls.items():
            start = time.perf_counter()
            fn()
            per_step[rows].append((time.perf_counter() - start) / args.steps)
    result = {"step_us": {rows: round(statistics.median(t) * 1e6, 1) for rows, t in per_step.items()},
              "rows_per_one_stream": {rows: round(statistics.median(
                  rows * one / many for one, many in zip(per_step[1], per_step[rows])), 2) for rows in SIZES[1:]}}
    if args.json:
        print(json.dumps(result))
        return
    for rows in SIZES:
        print(f"{rows:>3} rows: {result['step_us'][rows]:8.1f} µs a step")
    for rows, ratio in result["rows_per_one_stream"].items():
        print(f"{rows:>3} rows in one call write {ratio:.2f} times one stream's characters/s")


if __name__ == "__main__":
    main()
