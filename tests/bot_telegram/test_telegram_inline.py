"""Telegram inline mode against the emulator: a user types `@bot Sancho dijo` and picks one of three texts.

The bot runs as in production (runtime, service, python-telegram-bot polling) with the tiny model;
the user's side is the emulator's /inlineQuery, and the tests read the answer the client would show.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import sys
import threading
import time
from pathlib import Path

import pytest

from bot.chat import messages
from config import ChatSection, Config, GenerationSection, ModelSection, TelegramSection
from model.seeds import DEFAULT_OPENING
from telegram_emulator.peer import bot_config, running_bot

sys.path.append(str(Path(__file__).resolve().parents[2]))  # benchmarks/ holds scripts, not an installed package
from benchmarks import inline_load  # noqa: E402

LENGTH = 60  # characters of each inline continuation in these tests
SEED = "Sancho dijo"


@pytest.fixture
def config(emulator, tiny_model_dir, tmp_path) -> Config:
    return bot_config(emulator, tiny_model_dir, tmp_path, ChatSection(rate_limit_per_minute=0),
                      inline_length=LENGTH)


def telegram(config: Config, **changes) -> Config:
    return dataclasses.replace(config, telegram=dataclasses.replace(config.telegram, **changes))


def texts(answer: dict) -> list[str]:
    return [r["input_message_content"]["message_text"] for r in answer["results"]]


async def test_a_query_offers_three_different_continuations_of_it(config, token, peer, caplog):
    caplog.set_level(logging.INFO, "cervantes.requests")
    async with running_bot(config, token):
        answer = await peer.inline(SEED)
    choices = texts(answer)
    assert len(choices) == 3 and len(set(choices)) == 3
    for text, result in zip(choices, answer["results"]):
        assert text.startswith(SEED) and len(text) == len(SEED) + LENGTH
        assert result["type"] == "article"
        continuation = " ".join(text[len(SEED):].split())
        title = result["title"].strip("…")
        assert title and continuation.startswith(title) and len(title) <= 40  # titled by its own continuation
        assert continuation.endswith(result.get("description", ""))  # then the rest of it
    assert len({r["id"] for r in answer["results"]}) == 3
    assert answer["is_personal"] is True  # another user's query for the same text gets its own
    assert 0 < answer["cache_time"] <= 10  # not the default 300 s: typing the same text again gets new ones
    assert answer["button"] is None
    (line,) = [r.fields for r in caplog.records if r.name == "cervantes.requests"]
    assert line["command"] == "inline" and line["outcome"] == "ok" and line["platform"] == "telegram"
    assert line["batch_size"] >= 3  # the three were written together
    assert line["characters"] == 3 * LENGTH and line["latency_ms"] > 0
    assert "501" not in line["chat"]  # a tag, not the user id


async def test_an_empty_query_continues_the_default_opening(config, token, peer):
    async with running_bot(config, token):
        answer = await peer.inline("")
    choices = texts(answer)
    assert len(set(choices)) == 3
    assert all(t.startswith(DEFAULT_OPENING) and len(t) == len(DEFAULT_OPENING) + LENGTH for t in choices)


async def test_characters_the_model_does_not_know_are_left_out(config, token, peer):
    async with running_bot(config, token):
        answer = await peer.inline("Sancho ☃ dijo 🙂")
    assert all(t.startswith("Sancho  dijo ") for t in texts(answer))
    assert not any("☃" in t or "🙂" in t for t in texts(answer))


async def test_a_user_typing_fast_gets_the_last_query_answered_and_the_older_never_written(config, token, peer):
    async with running_bot(config, token) as bot:
        service = bot.commands.service
        entered, release = threading.Event(), threading.Event()
        sample = service.sampler.sample

        def held(*args, **kwargs):  # the worker's first chunk waits until every keystroke is in
            entered.set()
            release.wait(10)
            return sample(*args, **kwargs)

        service.sampler.sample = held
        before = service.stats()
        keystrokes = ["S", "Sa", "San", "Sanc", "Sancho"]
        ids = [await peer.inline_query(keystrokes[0])]
        assert await asyncio.to_thread(entered.wait, 10)
        for text in keystrokes[1:]:
            ids.append(await peer.inline_query(text))
        deadline = time.monotonic() + 10
        while service.stats().requests - before.requests < 3 * len(keystrokes):  # the bot has read them all
            assert time.monotonic() < deadline, "the bot never read every keystroke"
            await asyncio.sleep(0.02)
        release.set()
        last = await peer.inline_answer(ids[-1])
        await asyncio.sleep(0.5)
        generated = service.stats().characters - before.characters
        answers = await peer.inline_answers()
    assert all(t.startswith("Sancho") and len(t) == len("Sancho") + LENGTH for t in texts(last))
    for older in ids[:-1]:
        assert not (answers[older]["answered"] or {}).get("results")  # never a list for an old text
    # the last query's three texts, and the first query's one call that was running (nobody was
    # waiting when it began: up to max_steps a row); nothing for the three keystrokes between
    assert generated <= 3 * LENGTH + 3 * service.max_steps < 5 * 3 * LENGTH, generated


async def test_a_user_over_the_inline_limit_gets_an_empty_list_with_a_button_saying_so(config, token, peer):
    async with running_bot(telegram(config, inline_rate_limit_per_minute=2), token):
        assert len((await peer.inline("Sancho")).get("results")) == 3
        assert len((await peer.inline("Sancho dijo")).get("results")) == 3
        slow = await peer.inline("Sancho dijo que")
        assert len((await peer.inline("Dulcinea", user_id=502))["results"]) == 3  # others are not held back
    assert slow["results"] == []
    assert slow["button"] == {"text": messages.INLINE_SLOW, "start_parameter": "despacio"}


async def test_a_full_queue_answers_an_empty_list_with_a_busy_button(config, token, peer):
    busy = dataclasses.replace(config, generation=dataclasses.replace(config.generation, queue_size=2))
    async with running_bot(busy, token) as bot:
        service = bot.commands.service
        before = service.stats()
        answer = await peer.inline(SEED)  # three requests, room for two
        await asyncio.sleep(0.3)
        after = service.stats()
    assert answer["results"] == []
    assert answer["button"] == {"text": messages.INLINE_BUSY, "start_parameter": "ocupado"}
    assert after.characters == before.characters  # the two that found room were withdrawn, not written
    assert after.waiting == after.active == 0


async def test_a_model_error_answers_an_empty_list_with_a_button_and_the_next_query_works(config, token, peer):
    async with running_bot(config, token) as bot:
        sampler = bot.commands.service.sampler
        sample = sampler.sample

        def fails_once(*args, **kwargs):
            sampler.sample = sample
            raise RuntimeError("device lost")

        sampler.sample = fails_once
        failed = await peer.inline(SEED)
        assert len((await peer.inline(SEED))["results"]) == 3
    assert failed["results"] == []
    assert failed["button"] == {"text": messages.INLINE_FAILED, "start_parameter": "error"}


async def test_a_failed_answer_is_logged_and_the_next_query_is_answered(config, token, peer, caplog):
    caplog.set_level(logging.WARNING, "bot.telegram.inline")
    async with running_bot(config, token):
        await peer.fail_next("answerInlineQuery", error_code=400, description=(
            "Bad Request: query is too old and response timeout expired or query ID is invalid"))
        first = await peer.inline_query("Sancho")
        while not await peer.calls("answerInlineQuery"):
            await asyncio.sleep(0.05)
        assert len((await peer.inline("Sancho dijo"))["results"]) == 3
    assert (await peer.inline_answers())[first]["answered"] is None
    assert any("answerInlineQuery failed" in r.getMessage() and "too old" in r.getMessage()
               for r in caplog.records)


async def test_the_emulator_refuses_answers_telegram_refuses(peer):
    """What the bot tests rely on: answerInlineQuery is checked as the Bot API checks it."""
    article = {"type": "article", "id": "1", "title": "t", "input_message_content": {"message_text": "x"}}

    async def answer(query_id, **fields):
        body = {"inline_query_id": query_id, "results": [article], **fields}
        body = {k: v if isinstance(v, str) else json.dumps(v) for k, v in body.items()}
        return await peer.http.post(f"/bot{peer.token}/answerInlineQuery", data=body)

    query = await peer.inline_query("x")
    assert (await answer(query, results=[article, article])).json()["description"].endswith("RESULT_ID_DUPLICATE")
    assert (await answer(query, results=[{**article, "title": ""}])).status_code == 400
    assert (await answer(query, results=[{**article, "input_message_content": {"message_text": "x" * 4097}}])
            ).json()["description"].endswith("MESSAGE_TOO_LONG")
    assert (await answer(query, results=[article] * 0, button={"text": "b", "start_parameter": "no spaces"})
            ).status_code == 400
    assert (await answer(query, results=[{**article, "id": str(i)} for i in range(51)])).status_code == 400
    assert (await answer(query)).status_code == 200
    assert "too old" in (await answer(query)).json()["description"]  # once only
    assert (await peer.inline_answers())[query]["answered"]["results"] == [article]
    long = await peer.http.post("/inlineQuery", json={"token": peer.token, "query": "x" * 257})
    assert long.status_code == 400  # a client sends at most 256 characters


async def test_the_inline_benchmark_runs_and_answers_every_user(emulator, tiny_model_dir):
    """benchmarks/inline_load.py on the tiny model, small: each user's last query gets three texts."""
    config = dataclasses.replace(Config(), model=ModelSection(path=str(tiny_model_dir), device="cpu"),
                                 generation=GenerationSection(chunk_steps=10, max_batch=16),
                                 telegram=TelegramSection(inline_length=LENGTH))
    report = await inline_load.run(config, emulator, count=5, strokes=3, interval_s=0.05)
    assert report["problems"] == []
    assert report["answered_well"] == report["users"] == 5 and report["queries"] == 15
    assert report["p95_s"] < 5
