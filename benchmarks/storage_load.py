"""`cervantes loadtest` on SQLite beside PostgreSQL: the same load, runs alternating between the stores.

    .venv/bin/python benchmarks/storage_load.py [--runs 3] [--chats 200] [--commands 5] [--rounds 3]
                                                [--json]

Each run is a fresh `cervantes loadtest --json` process (the shipped model), in turn on each store:
- sqlite: its temporary SQLite file (WAL, synchronous=NORMAL: no fsync per commit);
- postgresql: `--storage-url` on a fresh database of a PostgreSQL server this script starts
  (tests/pg.py) with PostgreSQL's defaults: fsync, and every commit flushed (synchronous_commit);
- postgresql-nofsync: the same on a server run as the tests run it (fsync and synchronous_commit off).
Reports per store the median over runs of the warm rounds (2 on; round 1 compiles XLA shapes):
commands/s and p95 latency, and each against SQLite's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "tests") not in sys.path:
    sys.path.append(str(ROOT / "tests"))  # the PostgreSQL server

import pg  # noqa: E402

CERVANTES = ROOT / ".venv" / "bin" / "cervantes"


def loadtest(args, url: str = "") -> list[dict]:
    command = [str(CERVANTES), "loadtest", "--chats", str(args.chats), "--commands", str(args.commands),
               "--rounds", str(args.rounds), "--json", *(["--storage-url", url] if url else [])]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CERVANTES_")}
    result = subprocess.run(command, capture_output=True, text=True, env={**env, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if result.returncode != 0:
        raise SystemExit(f"loadtest failed ({result.returncode}): {result.stderr[-2000:]}")
    return json.loads(result.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per store")
    parser.add_argument("--chats", type=int, default=200)
    parser.add_argument("--commands", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="per run; round 1 is left out of the figures")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if reason := pg.missing():
        raise SystemExit(reason)
    servers = {"postgresql": pg.Server(durable=True), "postgresql-nofsync": pg.Server()}
    runs: dict[str, list[list[dict]]] = {"sqlite": [], **{store: [] for store in servers}}
    try:
        for server in servers.values():
            server.start()
        for i in range(args.runs):
            for store in runs:
                rounds = loadtest(args, servers[store].new_database() if store in servers else "")
                if not all(r["exactly_once"] and not r["misrouted"] for r in rounds):
                    raise SystemExit(f"{store}: not every command answered exactly once: {rounds}")
                runs[store].append(rounds)
                warm = rounds[1:] or rounds
                print(f"run {i + 1} {store}: " + ", ".join(
                    f"{r['commands_per_s']:.0f}/s p95 {r['p95_s']:.2f} s" for r in warm), file=sys.stderr, flush=True)
    finally:
        for server in servers.values():
            server.stop()
    report = {}
    for store, done in runs.items():
        warm = [r for rounds in done for r in (rounds[1:] or rounds)]
        report[store] = {"commands_per_s": round(statistics.median(r["commands_per_s"] for r in warm), 1),
                         "p95_s": round(statistics.median(r["p95_s"] for r in warm), 3),
                         "round_1_p95_s": round(statistics.median(rounds[0]["p95_s"] for rounds in done), 3),
                         "warm_rounds": len(warm)}
    for store in report:
        report[store]["throughput_vs_sqlite"] = round(
            report[store]["commands_per_s"] / report["sqlite"]["commands_per_s"], 2)
        report[store]["p95_vs_sqlite"] = round(report[store]["p95_s"] / report["sqlite"]["p95_s"], 2)
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{args.runs} runs per store, alternating; cervantes loadtest --chats {args.chats} "
              f"--commands {args.commands} --rounds {args.rounds}; medians of the warm rounds")
        for store, r in report.items():
            print(f"{store}: {r['commands_per_s']} commands/s ({r['throughput_vs_sqlite']} x SQLite), "
                  f"p95 {r['p95_s']} s ({r['p95_vs_sqlite']} x SQLite); round 1 p95 {r['round_1_p95_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
