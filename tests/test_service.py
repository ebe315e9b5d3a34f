"""The generation service over the tiny untrained model: batching, continuation, streaming, and
robustness (a full queue, cancellation, model errors, timeouts). Structure, not quality."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading

import numpy as np
import pytest

from service.generation import Busy, GenerationService, _stream_key, split_by_default

SEEDS = ["En un lugar de la Mancha, ", "¿Qué gigantes? dijo Sancho", "rocín flaco", "a",
         "«Aquellos que allí ves», respondió su amo.\n" * 3]


def request(i: int) -> dict:
    """The i-th of a varied set: own seed, length, temperature, random seed; some with top_k."""
    return dict(seed=SEEDS[i % len(SEEDS)], length=20 + (7 * i) % 60, temperature=(0.0, 0.7, 1.3)[i % 3],
                random_seed=1000 + i, top_k=5 if i % 4 == 0 else 0)


@pytest.fixture
async def service(tiny_sampler):
    async with GenerationService(tiny_sampler) as s:
        yield s


def blocking(sampler, monkeypatch) -> tuple[threading.Event, threading.Event]:
    """Make sampler.sample wait for `release` after signalling `entered`: a stuck worker."""
    entered, release, sample = threading.Event(), threading.Event(), sampler.sample

    def blocked(*args, **kwargs):
        entered.set()
        release.wait(10)
        return sample(*args, **kwargs)

    monkeypatch.setattr(sampler, "sample", blocked)
    return entered, release


async def test_concurrent_rows_equal_the_same_requests_alone(service):
    alone = [await service.generate(**request(i)) for i in range(50)]
    together = await asyncio.gather(*(service.generate(**request(i)) for i in range(50)))
    for i, (a, b) in enumerate(zip(alone, together)):
        assert len(b.text) == request(i)["length"]
        assert b.text == a.text
        assert b.last_char == a.last_char
        np.testing.assert_allclose(b.state, a.state, atol=1e-5)
    assert all(a.batch_size == 1 for a in alone)
    assert max(b.batch_size for b in together) > 1


async def test_rows_split_into_two_calls_side_by_side_write_what_they_write_alone(tiny_sampler, monkeypatch):
    """split: 8 to 32 rows run as two half calls at once, in two threads; each row's text and state
    are still its own, whichever half it fell in."""
    calls, sample = [], tiny_sampler.sample

    def counted(last, *args, **kwargs):
        calls.append((threading.get_ident(), len(last)))
        return sample(last, *args, **kwargs)

    async with GenerationService(tiny_sampler) as plain:
        alone = [await plain.generate(**request(i)) for i in range(12)]
    monkeypatch.setattr(tiny_sampler, "sample", counted)
    async with GenerationService(tiny_sampler, split=True) as s:
        together = await asyncio.gather(*(s.generate(**request(i)) for i in range(12)))
    for a, b in zip(alone, together):
        assert b.text == a.text
        np.testing.assert_allclose(b.state, a.state, atol=1e-5)
    assert max(b.batch_size for b in together) == 12
    # top_k 0 (9 rows): halves of 5 and 4, padded to 8 and 4; top_k 5 (3 rows): one call of 4
    assert 16 not in {rows for _, rows in calls}
    assert len({thread for thread, _ in calls}) == 2


def test_split_is_on_off_or_auto():
    assert split_by_default("on") and not split_by_default("off")
    assert isinstance(split_by_default("auto"), bool)
    with pytest.raises(ValueError):
        split_by_default("yes")


async def test_greedy_continuation_from_a_state_equals_one_longer_generation(service):
    whole = await service.generate("En un lugar", temperature=0, length=200)
    first = await service.generate("En un lugar", temperature=0, length=37)
    rest = await service.generate(state=first.state, last_char=first.last_char, temperature=0, length=163)
    assert (first.seed, rest.seed) == ("En un lugar", "")
    assert first.text + rest.text == whole.text
    assert first.text[-1] == first.last_char
    np.testing.assert_allclose(rest.state, whole.state, atol=1e-5)


async def test_a_seed_longer_than_a_chunk_is_read_as_if_primed_first(tiny_sampler):
    """A joining row reads its seed inside the chunks (here three of them) before it samples: the
    same text and state as priming the seed in a call of its own, then sampling."""
    async with GenerationService(tiny_sampler, chunk_steps=10) as service:
        result = await service.generate(SEEDS[4], temperature=1.0, length=40, random_seed=9)
    assert len(result.seed) > 2 * service.max_steps
    states, last = tiny_sampler.prime([tiny_sampler.vocab.encode(result.seed)])
    ids, after, *_ = tiny_sampler.sample(last, states, [1.0], 40, seeds=[_stream_key(9)])
    assert result.text == tiny_sampler.vocab.decode(ids[0])
    np.testing.assert_allclose(result.state, after[0], atol=1e-5)


async def test_a_short_request_joins_a_running_long_one_and_finishes_first(service):
    long = service.stream("En un lugar", length=3000, random_seed=1)
    first_chunk = await anext(long)
    short = await service.generate("rocín", length=10, random_seed=2)
    assert len(short.text) == 10 and short.batch_size == 2
    assert long.result is None
    rest = [text async for text in long]
    assert len(first_chunk + "".join(rest)) == 3000 == len(long.result.text)


async def test_company_is_awaited_a_fifth_of_max_wait_after_the_last_request_came(tiny_sampler):
    async with GenerationService(tiny_sampler, max_wait_ms=1000) as service:
        await service.generate("a", length=5)  # the shapes of a lone request compile here
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert (await service.generate("a", length=5)).batch_size == 1
        assert 0.19 <= loop.time() - started < 0.9  # not the whole second: nobody else came
        together = await asyncio.gather(*(service.generate(s, length=5) for s in ("a", "b", "c")))
        assert [r.batch_size for r in together] == [3, 3, 3]  # those that come together run together


async def test_stream_chunks_make_up_the_final_text(service):
    stream = service.stream("Sancho", length=1200, random_seed=7)
    assert stream.seed.text == "Sancho" and stream.result is None
    chunks = [text async for text in stream]
    assert len(chunks) > 1
    assert "".join(chunks) == stream.result.text
    assert stream.result.text == (await service.generate("Sancho", length=1200, random_seed=7)).text


async def test_a_full_queue_answers_busy_at_once(tiny_sampler, monkeypatch):
    entered, release = blocking(tiny_sampler, monkeypatch)
    async with GenerationService(tiny_sampler, queue_size=2) as service:
        running = asyncio.create_task(service.generate("a", length=5))
        assert await asyncio.to_thread(entered.wait, 10)
        waiting = [service.stream("a", length=5), service.stream("b", length=5)]
        with pytest.raises(Busy):
            service.stream("c", length=5)
        with pytest.raises(Busy):
            await service.generate("d", length=5)
        release.set()
        assert len((await running).text) == 5
        for stream in waiting:
            assert len("".join([text async for text in stream])) == 5


async def test_a_cancelled_request_leaves_and_the_others_are_untouched(service):
    alone = [await service.generate(**request(i)) for i in range(5)]
    victim = asyncio.create_task(service.generate("a", length=100_000))
    others = [asyncio.create_task(service.generate(**request(i))) for i in range(5)]
    while service.stats().active < 6:
        await asyncio.sleep(0.002)
    victim.cancel()
    assert [r.text for r in await asyncio.gather(*others)] == [r.text for r in alone]
    assert victim.cancelled()
    assert (await service.generate("a", length=5)).batch_size == 1  # the victim's row is gone
    assert service.stats().active == 0


async def test_a_cancelled_row_makes_room_in_a_full_batch_at_the_next_chunk(tiny_sampler, monkeypatch):
    entered, release = blocking(tiny_sampler, monkeypatch)
    held, rows = tiny_sampler.sample, []

    def counted(last, states, temperatures, steps, steps_left, **kwargs):
        rows.append(int((steps_left > 0).sum()))  # the real rows of each model call, fillers left out
        return held(last, states, temperatures, steps, steps_left=steps_left, **kwargs)

    monkeypatch.setattr(tiny_sampler, "sample", counted)
    async with GenerationService(tiny_sampler, max_batch=2, chunk_steps=5) as service:
        long = asyncio.create_task(service.generate("a", length=50))
        typed = service.stream("b", length=50)  # superseded, as an inline query is by the next keystroke
        assert await asyncio.to_thread(entered.wait, 10)  # both rows in the first chunk
        typed.cancel()
        newer = asyncio.create_task(service.generate("c", length=5))
        await asyncio.sleep(0.05)
        release.set()
        assert len((await newer).text) == 5
        await long
    assert rows[:2] == [2, 2]  # the newer request took the cancelled row's place at once, not a chunk later


async def test_cancelled_waiters_free_their_places_in_the_queue_at_once(tiny_sampler, monkeypatch):
    """Inline mode cancels three rows per keystroke: while a full batch runs, those must not hold
    places in the queue, or the next user is told "busy"."""
    entered, release = blocking(tiny_sampler, monkeypatch)
    async with GenerationService(tiny_sampler, max_batch=2, queue_size=3) as service:
        batch = [asyncio.create_task(service.generate(s, length=5)) for s in ("a", "b")]
        assert await asyncio.to_thread(entered.wait, 10)  # a full batch, stuck in the model
        for keystroke in range(4):  # each supersedes the last: three rows asked, then cancelled
            typed = [service.stream(f"{keystroke} {i}", length=5) for i in range(3)]
            for stream in typed:
                stream.cancel()
        assert service.stats().waiting == 0
        newer = service.stream("d", length=5)  # accepted: the cancelled rows left their places
        release.set()
        assert len("".join([text async for text in newer])) == 5
        assert [len(r.text) for r in await asyncio.gather(*batch)] == [5, 5]


async def test_a_model_error_reaches_every_caller_of_the_batch_and_the_next_request_works(
        service, tiny_sampler, monkeypatch):
    sample = tiny_sampler.sample
    calls = []

    def fails_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("device lost")
        return sample(*args, **kwargs)

    monkeypatch.setattr(tiny_sampler, "sample", fails_once)
    results = await asyncio.gather(*(service.generate("a", length=30) for _ in range(3)),
                                   return_exceptions=True)
    assert [str(r) for r in results] == ["device lost"] * 3
    assert len((await service.generate("a", length=30)).text) == 30
    assert service.stats().errors == 1


async def test_streams_left_after_their_batch_failed_are_not_logged_as_unread(service, tiny_sampler, monkeypatch):
    reported = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda loop, context: reported.append(context["message"]))

    def fails(*args, **kwargs):
        raise RuntimeError("device lost")

    monkeypatch.setattr(tiny_sampler, "sample", fails)
    # the log record of the failure would hold its traceback, and so the futures, past the test
    monkeypatch.setattr(logging.getLogger("service.generation"), "disabled", True)
    try:
        streams = [service.stream("a", length=30) for _ in range(3)]
        with pytest.raises(RuntimeError):
            async for _ in streams[0]:  # the caller reads one, meets the error, leaves the others
                pass
        for stream in streams[1:]:
            stream.cancel()
        with pytest.raises(RuntimeError):  # a next batch, so that the worker holds none of those rows
            await service.generate("b", length=5)
        del streams, stream
        gc.collect()  # an unread error is logged when its future is collected
    finally:
        loop.set_exception_handler(None)
    assert reported == []


async def test_a_stuck_request_times_out_and_the_service_goes_on(tiny_sampler, monkeypatch):
    entered, release = blocking(tiny_sampler, monkeypatch)
    async with GenerationService(tiny_sampler, request_timeout_s=0.3) as service:
        with pytest.raises(TimeoutError):
            await service.generate("a", length=5)
        release.set()
        monkeypatch.undo()
        service.request_timeout_s = 30.0
        assert len((await service.generate("a", length=5)).text) == 5
        assert service.stats().active == 0


async def test_unknown_seed_characters_are_reported(service):
    result = await service.generate("En un lugar 😀 de la Mancha", length=5)
    assert result.dropped == "😀"
    assert result.seed == "En un lugar  de la Mancha"
    assert not result.truncated
    default = await service.generate("😀😀", length=5)
    assert default.seed.startswith("En un lugar") and default.dropped == "😀"


@pytest.mark.parametrize("bad", [dict(length=0), dict(temperature=-0.1), dict(temperature=float("nan")),
                                 dict(temperature=float("inf")), dict(last_char="a"),
                                 dict(state=np.zeros(3, np.float32), last_char="a")])
async def test_bad_requests_are_refused(service, bad):
    with pytest.raises(ValueError):
        await service.generate(**bad)


async def test_the_service_top_k_is_the_default_of_requests_that_give_none(tiny_sampler, service):
    seed = "En un lugar"
    greedy = (await service.generate(seed, temperature=0, length=60)).text
    bold = (await service.generate(seed, temperature=2, length=60, random_seed=1)).text
    assert bold != greedy  # without top_k, temperature 2 wanders
    async with GenerationService(tiny_sampler, top_k=1) as one:
        assert (await one.generate(seed, temperature=2, length=60, random_seed=1)).text == greedy
        assert (await one.generate(seed, temperature=2, length=60, random_seed=1, top_k=0)).text == bold


async def test_the_worker_beats_while_idle_and_a_dead_worker_shows(tiny_sampler):
    async with GenerationService(tiny_sampler, heartbeat_s=0.05) as service:
        await asyncio.sleep(0.01)
        assert service.worker_alive and service.progress_at is not None
        first = service.progress_at
        await asyncio.sleep(0.2)  # no request: the idle worker still notes the time
        assert service.progress_at > first
        service._worker.cancel()  # as an error the worker could not catch would end it
        await asyncio.sleep(0)
        assert not service.worker_alive
    assert not service.worker_alive


async def test_a_sampled_continuation_goes_on_with_the_same_random_stream(service):
    whole = await service.generate("En un lugar", temperature=1.0, length=200, random_seed=7)
    first = await service.generate("En un lugar", temperature=1.0, length=37, random_seed=7)
    rest = await service.generate(state=first.state, last_char=first.last_char, temperature=1.0, length=163,
                                  random_seed=first.random_seed, position=first.position)
    assert (first.random_seed, first.position, rest.position) == (7, 37, 200)
    assert first.text + rest.text == whole.text  # the same text as one long generation, noise and all


async def test_every_bit_of_the_random_seed_counts(service):
    a = await service.generate("En un lugar", temperature=1.0, length=80, random_seed=5)
    b = await service.generate("En un lugar", temperature=1.0, length=80, random_seed=5 + 2**32)
    assert a.text != b.text


@pytest.mark.parametrize("split", [False, True])
async def test_a_mix_of_requests_uses_only_the_shapes_warmed_at_start(tiny_book_sampler, monkeypatch, split):
    """XLA compiles one program per distinct input shape and compile-time value (the output's
    capacity and top_k; a chunk's steps and top_p are not ones). Count the distinct ones the worker
    uses over a mix of seed lengths (some longer than a chunk), reply lengths, batch sizes, top-p and
    words: none beyond those warm() compiled."""
    seen = set()
    sampler, compiled = tiny_book_sampler, tiny_book_sampler._sample

    def recording(last, h, words, temperatures, seeds, positions, forced, forced_len, capacity, steps,
                  top_k, top_p, steps_left):
        seen.add((*(tuple(a.shape) for a in (last, h, words, temperatures, seeds, positions, forced, forced_len,
                                             steps_left)), int(capacity), int(top_k)))
        return compiled(last, h, words, temperatures, seeds, positions, forced, forced_len, capacity, steps,
                        top_k, top_p, steps_left)

    monkeypatch.setattr(sampler, "_sample", recording)
    async with GenerationService(sampler, max_batch=16, chunk_steps=10, words="book", split=split) as s:
        await s.warm()
        warmed = set(seen)
        assert len(warmed) == len(s.shapes()) == 5  # 1, 2, 4, 8 and 16 rows
        for batch, length in [(1, 7), (3, 33), (5, 10), (16, 99), (2, 1), (11, 45)]:
            await asyncio.gather(*(s.generate("Sancho " * (i * 7 % 40 + 1), length=length + i, temperature=0.5,
                                              top_p=(1.0, 0.9, 0.5)[i % 3], words=("free", "book")[i % 2])
                                   for i in range(batch)))
            first = await s.generate("la Mancha", length=length)
            await s.generate(state=first.state, last_char=first.last_char, tail="la Mancha" + first.text,
                             length=length + 3)
    assert seen == warmed
