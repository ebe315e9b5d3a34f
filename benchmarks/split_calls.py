"""What `[generation] split` buys: n concurrent requests through the service with and without it.

    .venv/bin/python benchmarks/split_calls.py [--sizes 4,8,16,32] [--rounds 8] [--every-size] [--json]

The shipped model, the book's words, temperature 0.5, 300 characters a request. For each n, one
service with split on and one with it off (both warmed); per round, one stream through the sampler
alone (2,000 characters), then the n requests through each service in turn, so a slower moment of
the shared machine falls on all three alike. Reports per n the median of each service's characters/s
against that round's one stream, and the median of the paired ratio split on / split off. Both
services write the same texts (rows are independent); the run checks that in every round.
Split applies to SPLIT_ROWS rows only (service/generation.py), so at other sizes on / off is noise;
`--every-size` splits every chunk of 2 rows or more, to see where splitting pays.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

LENGTH, ONE_STREAM = 300, 2000


async def measure(sampler, n: int, rounds: int) -> dict:
    from cli.bench import _seed
    from model.sampler import generate
    from service.generation import GenerationService

    def one_stream() -> float:
        start = time.perf_counter()
        generate(sampler, ["Sancho"], ONE_STREAM, 0.5, words="book")
        return ONE_STREAM / (time.perf_counter() - start)

    async with GenerationService(sampler, words="book") as off, GenerationService(sampler, words="book",
                                                                                 split=True) as on:
        await off.warm()
        await on.warm()
        one_stream()
        rates = {"off": [], "on": []}
        for r in range(rounds + 1):
            alone = one_stream()
            texts = {}
            for name, service in (("off", off), ("on", on)):
                start = time.perf_counter()
                results = await asyncio.gather(*(service.generate(_seed(i, r), temperature=0.5, length=LENGTH,
                                                                  random_seed=i) for i in range(n)))
                if r:  # round 0 is unmeasured
                    rates[name].append(n * LENGTH / (time.perf_counter() - start) / alone)
                texts[name] = [result.text for result in results]
            if texts["on"] != texts["off"]:
                raise AssertionError(f"{n} rows: split changed the texts")
    return {"off_per_one_stream": round(statistics.median(rates["off"]), 2),
            "on_per_one_stream": round(statistics.median(rates["on"]), 2),
            "on_per_off": round(statistics.median(b / a for a, b in zip(rates["off"], rates["on"])), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="4,8,16,32")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--every-size", action="store_true", help="split every chunk of 2 rows or more")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from model import bundle
    from model.sampler import Sampler
    from service import generation

    if args.every_size:
        generation.SPLIT_ROWS = range(2, 2**31)
    loaded = bundle.load()
    sampler = Sampler(loaded.network, loaded.vocab, loaded.lexicon)
    result = {n: asyncio.run(measure(sampler, n, args.rounds)) for n in map(int, args.sizes.split(","))}
    if args.json:
        print(json.dumps(result))
        return
    print("| concurrent | split off / one stream | split on / one stream | on / off |\n|---:|---:|---:|---:|")
    for n, f in result.items():
        print(f"| {n} | {f['off_per_one_stream']:.2f} | {f['on_per_one_stream']:.2f} | {f['on_per_off']:.3f} |")


if __name__ == "__main__":
    main()
