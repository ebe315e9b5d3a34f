"""The generation service: one worker batches every chat's requests over one shared Sampler.

Requests wait in one bounded queue. The worker runs the model in chunks over every active row: a
joining row first reads its seed inside the chunk (no call of its own), then samples. A chunk is
`chunk_steps` steps while requests wait, and longer while nobody does (up to MAX_CHUNKS times,
fewer the more rows run, so that a chunk never takes much longer than a full batch's ordinary one);
at each chunk boundary finished, cancelled and expired rows leave and waiting requests join
(continuous batching), so a short request never waits for a long one. XLA compiles one program per
shape; a chunk's length is not one, so there is one program per batch size (`shapes`), and `warm`
compiles them all before the first request.
On a CPU, a chunk of SPLIT_ROWS rows can run as two half calls side by side (`split`): one call's
matrix product uses both cores, but the rest of each step (the sampling, the word table) runs on one
core, and two calls overlap it (docs/performance.md).
Only the model calls run in the worker's thread (two with split); seed cleaning, text to ids and
ids to text happen in each request's own coroutine. The worker notes the time at every chunk, and every heartbeat_s
while idle (`progress_at`): a worker that is gone or stuck shows (`cervantes health`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import operator
import os
import secrets
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from itertools import groupby
from pathlib import Path

import numpy as np

from model import seeds
from model.sampler import Sampler
from model.vocab import Vocab

log = logging.getLogger(__name__)

_END = object()  # follows a row's last chunk: its future is done
MAX_CHUNKS = 5  # while nobody waits, a call runs up to this many times chunk_steps: fewer calls
# with split, a chunk of this many rows runs as two half calls side by side. Against one call, on a
# 2-core CPU, two runs (the first an uncommitted script, the second benchmarks/split_calls.py
# --every-size): 4 rows -2% and -11%, 8 rows +15% and +8%, 16 rows +8% and +9%, 32 rows +2% and
# +5%, 64 rows -3% and -15%
SPLIT_ROWS = range(8, 33)
SPLITS = ("auto", "on", "off")  # [generation] split: "auto" is on where the model runs on a CPU of 2+ cores


class Busy(Exception):
    """The queue of waiting requests is full: try again in a moment."""


@dataclass
class Result:
    text: str  # the continuation only, without the seed
    state: np.ndarray  # [units]: after every character but the last
    last_char: str  # with `state`, goes on exactly where this stopped
    seed: str  # the cleaned seed the model read; "" for a continuation
    dropped: str  # distinct seed characters the model does not know, left out
    truncated: bool  # the seed was too long and only its end was read
    batch_size: int  # the most rows this request shared a chunk with, itself included
    random_seed: int = 0  # the random stream the text was drawn with
    position: int = 0  # characters of that stream used, this text's included: where a continuation starts


@dataclass(frozen=True)
class Stats:
    waiting: int  # requests in the queue
    active: int  # rows in the running batch
    requests: int  # accepted since start
    characters: int  # generated since start
    chunks: int  # chunks since start (a split chunk is two sample calls)
    errors: int  # model calls that raised


@dataclass(eq=False)
class _Row:
    pending: np.ndarray  # ids to read after `last` before sampling: the rest of a seed
    state: np.ndarray  # [units]: zeros for a seed
    last: int  # id of the character to feed next
    temperature: float
    length: int
    random_seed: int
    top_k: int
    top_p: float
    word: int  # the word state after `last` (model/lexicon.py): OFF for "free"
    deadline: float  # loop time
    future: asyncio.Future  # (state, last id), or the exception
    chunks: asyncio.Queue = field(default_factory=asyncio.Queue)  # ids [steps] per chunk, then _END
    position: int = 0  # characters generated so far: the sampler's noise counter
    batch_size: int = 0
    abandoned: bool = False  # the caller left (cancelled, timed out, stopped reading)

    @property
    def remaining(self) -> int:
        return self.length - self.position


class Stream:
    """`async for text in stream` yields each chunk's text as it is produced; then `stream.result`.

    Errors (the model's; TimeoutError once request_timeout_s has passed since the request was made)
    are raised from the loop. A caller that stops reading early calls `cancel()`, so the row leaves
    the queue at once, or the batch at the next chunk boundary; a cancelled reading task does so by
    itself.
    """

    def __init__(self, row: _Row, vocab: Vocab, seed: seeds.Seed | None, withdraw):
        self.seed = seed  # the cleaned seed, known at once (to show it first); None for a continuation
        self.result: Result | None = None  # set when the iteration ends
        self._row, self._vocab, self._withdraw = row, vocab, withdraw
        self._texts: list[str] = []
        self._done = False

    def __aiter__(self) -> "Stream":
        return self

    async def __anext__(self) -> str:
        if self._done:
            raise StopAsyncIteration
        try:
            async with asyncio.timeout_at(self._row.deadline):
                item = await self._row.chunks.get()
        except BaseException:  # timed out or cancelled: the row leaves at the next boundary
            self.cancel()
            raise
        if item is _END:
            self._done = True
            state, last = self._row.future.result()  # raises the worker's exception, if any
            self.result = self._finish(state, last)
            raise StopAsyncIteration
        text = self._vocab.decode(item)
        self._texts.append(text)
        return text

    def cancel(self) -> None:
        self._row.abandoned = True
        self._done = True
        self._row.future.add_done_callback(_unread)  # its batch may fail: nobody left to read that
        self._withdraw(self._row)

    def _finish(self, state: np.ndarray, last: int) -> Result:
        seed = self.seed
        return Result(text="".join(self._texts), state=state,
                      last_char=self._vocab.decode([last]),
                      seed=seed.text if seed else "", dropped=seed.dropped if seed else "",
                      truncated=seed.truncated if seed else False, batch_size=self._row.batch_size,
                      random_seed=self._row.random_seed, position=self._row.position)


def _unread(future: asyncio.Future) -> None:
    """Mark a left row's error as read, so asyncio does not log it as "never retrieved"."""
    if not future.cancelled():
        future.exception()


def _stream_key(random_seed: int) -> int:
    """A 63-bit random seed as the sampler's 32-bit noise key, every bit of it mixed in (splitmix64's
    finalizer): seeds S and S + 2**32 draw different texts."""
    x = random_seed & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (x ^ (x >> 31)) & 0xFFFFFFFF


class GenerationService:
    """One shared batcher: `await generate(...)` or `stream(...)` from any coroutine.

    Use `async with GenerationService(sampler) as service:` or call `start()` and `close()`.
    `top_k`, `top_p` and `words` ("free", or "book": only the words of the sampler's lexicon) are
    the defaults for requests that do not give their own. `split`: a chunk of SPLIT_ROWS rows runs
    as two half calls side by side (`split_by_default` says where that pays).
    """

    def __init__(self, sampler: Sampler, *, max_batch: int = 64, max_wait_ms: float = 5,
                 chunk_steps: int = 100, queue_size: int = 256, request_timeout_s: float = 30.0,
                 max_seed_chars: int = seeds.MAX_SEED_CHARS, strip_accents: bool = False,
                 top_k: int = 0, top_p: float = 1.0, words: str = "free", heartbeat_s: float = 2.0,
                 split: bool = False):
        if max_batch < 1 or chunk_steps < 1 or queue_size < 1:
            raise ValueError("max_batch, chunk_steps and queue_size must be at least 1")
        _checked(1, 0.0, top_k, top_p)
        sampler.word_states([], words)  # ValueError: an unknown mode, or "book" without a lexicon
        self.sampler = sampler
        self.max_batch, self.chunk_steps, self.queue_size = max_batch, chunk_steps, queue_size
        self.max_wait_s = max_wait_ms / 1000
        self.request_timeout_s = request_timeout_s
        self.max_seed_chars, self.strip_accents = max_seed_chars, strip_accents
        self._forced_width = max(1, max_seed_chars - 1)  # the widest seed's rest: one shape
        self.max_steps = MAX_CHUNKS * chunk_steps  # the most steps of one call (one row, nobody waiting)
        self._sizes = [1]  # the batch sizes of every model call: powers of two up to max_batch's
        while self._sizes[-1] < max_batch:
            self._sizes.append(self._sizes[-1] * 2)
        self.top_k, self.top_p, self.words, self.heartbeat_s = top_k, top_p, words, heartbeat_s
        self.split = split
        self.progress_at: float | None = None  # wall time of the worker's last chunk or idle heartbeat
        self._waiting: deque[_Row] = deque()  # bounded by queue_size in _submit
        self._active: list[_Row] = []
        self._counts = dict(requests=0, characters=0, chunks=0, errors=0)
        self._worker: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._arrived: asyncio.Event | None = None

    # lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._worker is not None:
            raise RuntimeError("the generation service is already started")
        self._executor = ThreadPoolExecutor(max_workers=2 if self.split else 1, thread_name_prefix="generation")
        self._arrived = asyncio.Event()
        self._worker = asyncio.create_task(self._work(), name="generation-worker")

    async def close(self) -> None:
        """Stop the worker; every request still waiting or running gets RuntimeError."""
        if self._worker is None:
            return
        self._worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._worker
        closed = RuntimeError("the generation service is closed")
        for row in [*self._active, *self._waiting]:
            if not self._leave_if_gone(row):
                self._fail(row, closed)
        self._active, self._waiting = [], deque()
        self._executor.shutdown(wait=False, cancel_futures=True)  # a running model call just ends
        self._worker = self._executor = None

    async def __aenter__(self) -> "GenerationService":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def stats(self) -> Stats:
        return Stats(waiting=len(self._waiting), active=len(self._active), **self._counts)

    @property
    def worker_alive(self) -> bool:
        """Started and not ended: the worker task ends only by close() or an error it could not catch."""
        return self._worker is not None and not self._worker.done()

    def shapes(self) -> list[tuple[str, int, int]]:
        """Every model call the worker makes, as (rows, forced width, capacity), one XLA program
        each: one per power of two rows (8 rows run as 8, not 16), whatever its seeds and steps."""
        return [(rows, self._forced_width, self.max_steps) for rows in self._sizes]

    async def warm(self) -> None:
        """Compile every shape the worker can use now, rather than in some user's reply (each takes
        0.4 to 1 s on two cores). Call it after start(), before taking requests."""
        known = self.sampler.vocab.encode(seeds.DEFAULT_OPENING)
        for rows, _, _ in self.shapes():
            await self._in_thread(
                _sample_padded, self.sampler, np.full(rows, known[0], np.int32), self.sampler.zero_state(rows),
                [known[1:]] * rows, self._forced_width, np.zeros(rows, np.int32), np.zeros(rows, np.float32),
                np.zeros(rows, np.int64), np.zeros(rows, np.int32), 1, self.max_steps, self.top_k, self.top_p,
                np.ones(rows, np.int32), rows)

    # requests -----------------------------------------------------------------------------------

    async def generate(self, seed: str | None = None, *, state: np.ndarray | None = None,
                       last_char: str | None = None, tail: str = "", temperature: float = 1.0,
                       length: int = 300, random_seed: int | None = None, top_k: int | None = None,
                       top_p: float | None = None, words: str | None = None, position: int = 0) -> Result:
        """Continue `seed` (cleaned; the default opening if empty) by `length` characters, or go on
        from a previous result's `state` and `last_char` (and, to go on with the same random stream,
        its `random_seed` and `position`; with "book", `tail`: the text so far, at least its last
        word, ending in `last_char`). Raises Busy, ValueError, TimeoutError."""
        stream = self.stream(seed, state=state, last_char=last_char, tail=tail, temperature=temperature,
                             length=length, random_seed=random_seed, top_k=top_k, top_p=top_p,
                             words=words, position=position)
        async for _ in stream:
            pass
        return stream.result

    def stream(self, seed: str | None = None, *, state: np.ndarray | None = None,
               last_char: str | None = None, tail: str = "", temperature: float = 1.0, length: int = 300,
               random_seed: int | None = None, top_k: int | None = None, top_p: float | None = None,
               words: str | None = None, position: int = 0) -> Stream:
        """Queue a request (as generate) and return its Stream at once. Raises Busy, ValueError."""
        if self._worker is None:
            raise RuntimeError("the generation service is not started")
        length, temperature, top_k, top_p = _checked(length, temperature, self.top_k if top_k is None else top_k,
                                                     self.top_p if top_p is None else top_p)
        vocab = self.sampler.vocab
        cleaned, pending = None, np.zeros(0, np.int32)
        if state is None and last_char is None:
            cleaned = seeds.clean(seed or "", vocab, self.strip_accents, self.max_seed_chars)
            seed_ids = vocab.encode(cleaned.text)
            state, last, pending = self.sampler.zero_state(1)[0], int(seed_ids[0]), seed_ids[1:]
            text = cleaned.text
        elif seed is None and state is not None and last_char is not None:
            state, last = self._checked_state(state, last_char)
            # the tail's last word (a stored text's tail), or at least the last character
            text = tail if isinstance(tail, str) and tail.endswith(last_char) else last_char
        else:
            raise ValueError("give a seed, or a state with its last_char, not both")
        word = int(self.sampler.word_states([text], self.words if words is None else words)[0])
        if not isinstance(position, int) or position < 0:
            raise ValueError("position must be a whole number >= 0")
        loop = asyncio.get_running_loop()
        row = _Row(pending=pending, state=state, last=last, temperature=temperature, position=position,
                   length=position + length, top_k=top_k, top_p=top_p, word=word, future=loop.create_future(),
                   random_seed=secrets.randbits(63) if random_seed is None else random_seed % 2**63,
                   deadline=loop.time() + self.request_timeout_s)
        self._submit(row)
        return Stream(row, vocab, cleaned, self._withdraw)

    def _checked_state(self, state: np.ndarray, last_char: str) -> tuple[np.ndarray, int]:
        state = np.asarray(state, np.float32)
        if state.shape != (self.sampler.units,) or not np.isfinite(state).all():
            raise ValueError(f"state must be {self.sampler.units} finite numbers")
        last = self.sampler.vocab.id_of(last_char) if isinstance(last_char, str) else 0
        if last == 0:
            raise ValueError("last_char must be one character the model knows")
        return state, last

    def _submit(self, row: _Row) -> None:
        if len(self._waiting) >= self.queue_size:
            raise Busy(f"{self.queue_size} requests are already waiting")
        self._waiting.append(row)
        self._counts["requests"] += 1
        self._arrived.set()

    def _withdraw(self, row: _Row) -> None:
        """A cancelled row still waiting leaves the queue now: its place is free for the next request
        (inline mode cancels rows per keystroke while a batch may run for a while)."""
        with contextlib.suppress(ValueError):
            self._waiting.remove(row)  # by identity (_Row is eq=False); ValueError: already taken
            self._leave_if_gone(row)

    # the worker ---------------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            self.progress_at = time.time()
            try:
                if not self._active:
                    await self._wait_for_requests()
                self._admit()
                await self._run_chunk()
            except Exception as exc:  # the batch's callers get it; the worker serves the next ones
                log.exception("generation batch failed")
                self._counts["errors"] += 1
                for row in self._active:
                    self._fail(row, exc)
                self._active = []

    async def _wait_for_requests(self) -> None:
        # idle: sleep until one request arrives (beating now and then), then give others max_wait to join
        while not self._waiting:
            self._arrived.clear()
            self.progress_at = time.time()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.heartbeat_s):
                    await self._arrived.wait()
        # ... but not longer than a fifth of it after the last one came: requests that come together
        # (a burst, inline mode's three) are together by then, and later ones join at the next chunk
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while len(self._waiting) < self.max_batch:
            self._arrived.clear()
            try:
                async with asyncio.timeout_at(min(deadline, loop.time() + self.max_wait_s / 5)):
                    await self._arrived.wait()
            except TimeoutError:
                return

    def _admit(self) -> None:
        """At a chunk boundary: rows gone leave (their places are free), waiting ones join, up to
        max_batch. A joining row brings its seed's rest to read inside the chunk: nothing to await."""
        self._active = [row for row in self._active if not self._leave_if_gone(row)]
        while self._waiting and len(self._active) < self.max_batch:
            row = self._waiting.popleft()
            if not self._leave_if_gone(row):
                self._active.append(row)

    async def _run_chunk(self) -> None:
        if not self._active:
            return
        steps = self._chunk_length()
        for row in self._active:
            row.batch_size = max(row.batch_size, len(self._active))
        # the sampler takes one top_k and top_p per call: one call per distinct pair (usually one)
        def settings(row):
            return row.top_k, row.top_p
        for (top_k, top_p), group in groupby(sorted(self._active, key=settings), key=settings):
            rows = list(group)
            half = (len(rows) + 1) // 2
            parts = [rows[:half], rows[half:]] if self.split and len(rows) in SPLIT_ROWS else [rows]
            # both halves end before an error goes on to fail the batch
            done = await asyncio.gather(*(self._sample(part, steps, top_k, top_p) for part in parts),
                                        return_exceptions=True)
            errors = [e for e in done if isinstance(e, BaseException)]
            for other in errors[1:]:
                log.error("the other half of the chunk failed too: %r", other)
            if errors:  # a half cancelled on its own (not the worker) must not end the worker
                first = errors[0]
                raise first if isinstance(first, Exception) else RuntimeError(f"a model call ended: {first!r}")
        self._counts["chunks"] += 1
        for row in self._active:
            if row.remaining == 0 and not row.future.done():
                row.future.set_result((row.state.copy(), row.last))
                row.chunks.put_nowait(_END)
        self._active = [row for row in self._active if row.remaining > 0]

    def _chunk_length(self) -> int:
        """chunk_steps while requests wait, so that they join soon. While nobody waits, fewer calls:
        up to max_steps, as long as the rows times the steps stay within a full batch's ordinary
        chunk (a request that comes meanwhile waits about as long as it would behind a full batch).
        Never more than the longest row still needs (its seed's rest, then its characters); and when
        that is at most a quarter more than the budget, all of it: no short call left at the end."""
        rows = len(self._active)
        budget = (self.chunk_steps if self._waiting
                  else min(self.max_steps, max(self.chunk_steps, self.max_batch * self.chunk_steps // rows)))
        needed = max(len(row.pending) + row.remaining for row in self._active)
        return needed if needed <= min(budget * 5 // 4, self.max_steps) else budget

    async def _sample(self, rows: list[_Row], steps: int, top_k: int, top_p: float) -> None:
        ids, states, last, words = await self._in_thread(
            _sample_padded, self.sampler, np.array([r.last for r in rows], np.int32),
            np.stack([r.state for r in rows]), [r.pending for r in rows], self._forced_width,
            np.array([r.word for r in rows], np.int32), np.array([r.temperature for r in rows], np.float32),
            np.array([_stream_key(r.random_seed) for r in rows], np.int64),
            np.array([r.position for r in rows], np.int32), steps, self.max_steps, top_k, top_p,
            np.array([r.remaining for r in rows], np.int32), _bucket(len(rows), self._sizes))
        for i, row in enumerate(rows):
            read = min(len(row.pending), steps)  # a seed longer than the chunk goes on in the next
            taken = min(row.remaining, steps - read)
            row.pending = row.pending[read:]
            row.state, row.last, row.word = states[i], int(last[i]), int(words[i])
            if taken:
                row.position += taken
                row.chunks.put_nowait(ids[i][:taken])  # the row's coroutine turns ids into text
                self._counts["characters"] += taken

    async def _in_thread(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, partial(fn, *args))

    def _leave_if_gone(self, row: _Row) -> bool:
        """A cancelled or expired row leaves: its future is cancelled or gets TimeoutError."""
        if row.abandoned and not row.future.done():
            row.future.cancel()
            row.chunks.put_nowait(_END)
        elif asyncio.get_running_loop().time() >= row.deadline:
            self._fail(row, TimeoutError(f"no result within {self.request_timeout_s} s"))
        return row.future.done()

    @staticmethod
    def _fail(row: _Row, exc: BaseException) -> None:
        if not row.future.done():
            row.future.set_exception(exc)
            row.chunks.put_nowait(_END)


# helpers: validation, and the padded model calls that run in the worker thread ---------------------

def split_by_default(setting: str) -> bool:
    """`[generation] split`: "on", "off", or "auto": on where the model runs on a CPU with 2 or
    more cores (on a GPU, one call of all the rows keeps it busier than two)."""
    if setting not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}")
    if setting != "auto":
        return setting == "on"
    import tensorflow as tf

    return not tf.config.get_visible_devices("GPU") and _cpus() >= 2


def _cpus() -> float:
    """The CPUs this process may use: its affinity, or fewer where a cgroup (v2) quota says so
    (a container started with --cpus=1 on a many-core host)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    with contextlib.suppress(OSError, ValueError):
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, int(quota) / int(period))
    return cpus


def _checked(length: int, temperature: float, top_k: int, top_p: float) -> tuple[int, float, int, float]:
    try:
        length, top_k, temperature = operator.index(length), operator.index(top_k), float(temperature)
        top_p = float(top_p)
    except (TypeError, ValueError) as exc:
        raise ValueError("length and top_k must be whole numbers, temperature and top_p numbers") from exc
    if length < 1:
        raise ValueError("length must be at least 1")
    if not math.isfinite(temperature) or temperature < 0:
        raise ValueError("temperature must be a finite number >= 0")
    if top_k < 0:
        raise ValueError("top_k must be >= 0")
    if not 0 < top_p <= 1:
        raise ValueError("top_p must be in (0, 1]")
    return length, temperature, top_k, top_p


def _bucket(n: int, sizes: list[int]) -> int:
    """The smallest of `sizes` that holds n rows: the batch sizes the model is called with. XLA
    compiles one program per shape, so few shapes mean few compilations (and a warm-up that takes
    seconds, not a minute), for at most twice the rows a call needs."""
    return next((size for size in sizes if size >= n), sizes[-1])


def _sample_padded(sampler: Sampler, last: np.ndarray, states: np.ndarray, forced: list[np.ndarray],
                   forced_width: int, words: np.ndarray, temperatures: np.ndarray, random_seeds: np.ndarray,
                   positions: np.ndarray, steps: int, capacity: int, top_k: int, top_p: float,
                   steps_left: np.ndarray, rows: int):
    """sampler.sample over the batch padded to `rows` rows (fillers: nothing to read, nothing to
    write), the forced width and the output's capacity fixed: only the batch size makes a new shape.

    Rows are independent, so fillers change nothing. Returns (ids [n, steps], states, last ids,
    word states).
    """
    n, pad = len(last), rows - len(last)
    if pad:
        last = np.concatenate([last, np.ones(pad, np.int32)])
        states = np.concatenate([states, np.zeros([pad, states.shape[1]], np.float32)])
        forced = list(forced) + [np.zeros(0, np.int32)] * pad
        words = np.concatenate([words, np.zeros(pad, np.int32)])
        temperatures = np.concatenate([temperatures, np.zeros(pad, np.float32)])
        random_seeds = np.concatenate([random_seeds, np.zeros(pad, np.int64)])
        positions = np.concatenate([positions, np.zeros(pad, np.int32)])
        steps_left = np.concatenate([steps_left, np.zeros(pad, np.int32)])
    ids, states, last, words = sampler.sample(last, states, temperatures, steps, seeds=random_seeds,
                                              positions=positions, top_k=top_k, top_p=top_p,
                                              steps_left=steps_left, words=words, forced=forced,
                                              forced_width=forced_width, capacity=capacity)
    return ids[:n], states[:n], last[:n], words[:n]
