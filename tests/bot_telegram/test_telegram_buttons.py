"""Buttons under the bot's texts on Telegram, end to end against the emulator (tests/telegram_emulator):
Continuar and Otra on the last text and on older ones, after a restart, on a forgotten text, pressed
by two members at once, and `/continuar` sent as a reply to one of the bot's texts."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time

import pytest

from bot.chat import messages
from bot.chat.commands import ChatKey
from bot.telegram.adapter import TelegramOutput
from config import ChatSection
from telegram_emulator.peer import LENGTH, bot_config, running_bot

# sampled: the tiny model's greedy text is a row of dots, the same whatever it continues. Exact
# continuations at a temperature need each text's random stream, stored with it.
SAMPLED = ChatSection(length=LENGTH, min_length=10, temperature=1.0, rate_limit_per_minute=0,
                      user_rate_limit_per_minute=0)
LABELS = ["Continuar", "Otra"]


@pytest.fixture
def config(emulator, tiny_model_dir, tmp_path):
    return bot_config(emulator, tiny_model_dir, tmp_path, SAMPLED)


async def texts(peer, chat_id: int, n: int, timeout: float = 30.0) -> list[dict]:
    """The chat's messages once there are `n` and the last one shows its buttons (its final text)."""
    deadline = time.monotonic() + timeout
    while True:
        got = await peer.messages(chat_id)
        if len(got) >= n and got[-1]["buttons"]:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"chat {chat_id}: expected {n} messages, the last with buttons; got {got!r}")
        await asyncio.sleep(0.05)


async def test_a_finished_text_has_both_buttons_and_a_setting_has_none(config, token, peer):
    async with running_bot(config, token):
        await peer.say("/cervantes Sancho dijo")
        (text,) = await texts(peer, 1001, 1)
        assert text["text"].startswith("Sancho dijo") and [label for label, _ in text["buttons"]] == LABELS
        (post,) = await peer.calls("sendMessage", 1001)  # one message, its buttons in the same request
        assert json.loads(post["params"]["reply_markup"])["inline_keyboard"]
        assert await peer.reply_to("/longitud 40") == messages.LENGTH_SET.format(value=40)
        assert (await peer.messages(1001))[-1]["buttons"] == []


async def test_continuar_on_an_older_text_goes_on_exactly_from_it(config, token, peer):
    async with running_bot(config, token):
        await peer.say("/cervantes Sancho dijo")
        await texts(peer, 1001, 1)
        await peer.say("/continuar")  # what going on right after it gives
        await texts(peer, 1001, 2)
        await peer.say("/cervantes Dulcinea")  # another text comes in between
        first, right_after, other = await texts(peer, 1001, 3)

        query = await peer.press(1001, first["message_id"], "Continuar")
        pressed = time.monotonic()
        got = (await texts(peer, 1001, 4))[-1]
        assert got["text"] == right_after["text"]
        assert got["reply_to"] == first["message_id"]  # it answers the text it continues
        assert [label for label, _ in got["buttons"]] == LABELS  # a story grows by tapping
        answer = (await peer.press_answers())[query]
        assert answer["answered"] is not None  # the button stopped spinning
        assert answer["answered"]["at"] - answer["at"] < 1000  # at once, before any text
        assert time.monotonic() - pressed < 30

        # Continuar on the continuation: on and on
        await peer.press(1001, got["message_id"], "Continuar")
        again = (await texts(peer, 1001, 5))[-1]
        assert again["reply_to"] == got["message_id"] and again["text"] != got["text"]


async def test_otra_writes_the_seed_again(emulator, tiny_model_dir, tmp_path, token, peer):
    async with running_bot(bot_config(emulator, tiny_model_dir, tmp_path, SAMPLED), token):
        await peer.say("/cervantes Sancho dijo")
        (first,) = await texts(peer, 1001, 1)
        for n in (2, 3):
            await peer.press(1001, first["message_id"], "Otra")
            other = (await texts(peer, 1001, n))[-1]
            assert other["text"].startswith("Sancho dijo") and len(other["text"]) == len(first["text"])
            assert other["reply_to"] == first["message_id"]
        assert len({m["text"] for m in await peer.messages(1001)}) > 1  # new randomness


async def test_buttons_work_after_a_restart(config, token, peer):
    async with running_bot(config, token):
        await peer.say("/cervantes Rocinante")
        (first,) = await texts(peer, 1001, 1)
        await peer.say("/continuar")
        right_after = (await texts(peer, 1001, 2))[-1]
    async with running_bot(config, token):  # the same database, a new process
        await peer.press(1001, first["message_id"], "Continuar")
        got = (await texts(peer, 1001, 3))[-1]
    assert got["text"] == right_after["text"]


async def test_a_forgotten_text_says_so(emulator, tiny_model_dir, tmp_path, token, peer):
    config = bot_config(emulator, tiny_model_dir, tmp_path, SAMPLED)
    config = dataclasses.replace(config, storage=dataclasses.replace(config.storage, replies_per_chat=1))
    async with running_bot(config, token):
        await peer.say("/cervantes Sancho")
        (first,) = await texts(peer, 1001, 1)
        await peer.say("/cervantes Dulcinea")
        await texts(peer, 1001, 2)
        await peer.press(1001, first["message_id"], "Continuar")
        replies = await peer.wait_for(1001, lambda r: len(r) >= 3)
        assert replies[-1] == messages.REPLY_FORGOTTEN
        await peer.say("/olvidar")
        await peer.wait_for(1001, lambda r: len(r) >= 4)
        second = (await peer.messages(1001))[1]
        await peer.press(1001, second["message_id"], "Otra")  # /olvidar took every text's state
        replies = await peer.wait_for(1001, lambda r: len(r) >= 5)
        assert replies[-1] == messages.REPLY_FORGOTTEN


async def test_continuar_as_a_reply_continues_that_text(config, token, peer):
    async with running_bot(config, token):
        await peer.say("/cervantes Sancho dijo")
        await texts(peer, 1001, 1)
        await peer.say("/continuar")
        await texts(peer, 1001, 2)
        await peer.say("/cervantes Dulcinea")
        first, right_after, other = await texts(peer, 1001, 3)

        await peer.answer("/continuar", first)
        got = (await texts(peer, 1001, 4))[-1]
        assert got["text"] == right_after["text"] and got["reply_to"] == first["message_id"]

        # without a reply, the last text, as always; a reply to a message without buttons, too
        await peer.say("/continuar")
        plain = (await texts(peer, 1001, 5))[-1]
        assert plain["reply_to"] is None and plain["text"] != got["text"]


async def test_two_members_press_at_once_in_a_group_within_the_flood_limits(emulator, tiny_model_dir, tmp_path,
                                                                           token, peer):
    limited = dataclasses.replace(SAMPLED, user_rate_limit_per_minute=2)
    async with running_bot(bot_config(emulator, tiny_model_dir, tmp_path, limited), token):
        await peer.flood()
        group = -5001
        await peer.say("/cervantes Sancho", group, chat_type="group", user_id=601)
        (first,) = await texts(peer, group, 1)
        queries = await asyncio.gather(*(peer.press(group, first["message_id"], label, user_id=user)
                                         for label, user in (("Continuar", 601), ("Otra", 602))))
        got = await texts(peer, group, 3)
        await asyncio.sleep(1.0)
        assert len(await peer.messages(group)) == 3  # each press answered once
        assert {m["reply_to"] for m in got[1:]} == {first["message_id"]}
        assert all(a["answered"] for q, a in (await peer.press_answers()).items() if q in queries)

        # presses count against the member's quota like commands: 601 has used its 2
        await peer.press(group, first["message_id"], "Otra", user_id=601)
        replies = await peer.wait_for(group, lambda r: len(r) >= 4)
        assert replies[-1].startswith(messages.RATE_LIMITED.split("{")[0])
        stats = await peer.flood_stats()
        assert stats["sent_into_pending"] == 0 and not stats["refused"]


class _Written:
    """A reply's pieces, slowly, as Commands hands them over: reply_id set once they end."""

    def __init__(self, pieces, pause_s):
        self.pieces, self.pause_s, self.reply_id = pieces, pause_s, None

    async def __aiter__(self):
        for piece in self.pieces:
            yield piece
            await asyncio.sleep(self.pause_s)
        self.reply_id = 7


async def test_a_streamed_text_shows_its_buttons_with_its_final_text_only(config, token, peer):
    async with running_bot(config, token) as bot:
        pieces = ["En un lugar", " de la Mancha,", " de cuyo nombre", " no quiero acordarme"]
        out = TelegramOutput(bot.outbox, 3003, ChatKey("telegram", "3003"))
        await out.stream(_Written(pieces, 0.6))
        assert (await out.delivery)["delivery"] == "delivered"
        (post,) = await peer.calls("sendMessage", 3003)
        edits = await peer.calls("editMessageText", 3003) + await peer.calls("editMessageReplyMarkup", 3003)
        assert "reply_markup" not in post["params"]  # posted while still growing
        final = max(edits, key=lambda e: e["at"])
        assert json.loads(final["params"]["reply_markup"])["inline_keyboard"][0][0]["callback_data"] == "continuar:7"
        assert all("reply_markup" not in e["params"] for e in edits if e is not final)
        (shown,) = await peer.messages(3003)
        assert shown["text"] == "".join(pieces) and [label for label, _ in shown["buttons"]] == LABELS


async def test_a_double_tap_counts_once(config, token, peer):
    async with running_bot(config, token):
        await peer.say("/cervantes Sancho")
        (first,) = await texts(peer, 1001, 1)
        taps = [await peer.press(1001, first["message_id"], "Continuar") for _ in range(2)]
        await texts(peer, 1001, 2)
        await asyncio.sleep(1.0)
        assert len(await peer.messages(1001)) == 2  # one continuation, not the same text twice
        answers = await peer.press_answers()
        assert answers[taps[1]]["answered"]["text"] == messages.PRESSED_TWICE  # said on the button

        # in a group, two members tapping Continuar on one text at once get it once, too
        group = -5002
        await peer.say("/cervantes Dulcinea", group, chat_type="group", user_id=601)
        (text,) = await texts(peer, group, 1)
        await asyncio.gather(*(peer.press(group, text["message_id"], "Continuar", user_id=u) for u in (601, 602)))
        await texts(peer, group, 2)
        await asyncio.sleep(1.0)
        assert len(await peer.messages(group)) == 2


async def test_a_press_in_a_forum_topic_stays_in_that_topic(config, token, peer):
    forum, topic = -1007770, 5
    async with running_bot(config, token):
        await peer.say("/cervantes Sancho", forum, chat_type="supergroup", topic=topic)
        await peer.say("/cervantes Dulcinea", forum, chat_type="supergroup", topic=6)  # another topic
        await texts(peer, forum, 2)
        sancho = next(m for m in await peer.messages(forum) if m["text"].startswith("Sancho"))
        await peer.press(forum, sancho["message_id"], "Continuar")
        got = (await texts(peer, forum, 3))[-1]
        assert got["reply_to"] == sancho["message_id"] and got["text"] != messages.REPLY_FORGOTTEN
        posts = await peer.calls("sendMessage", forum)
        assert str(posts[-1]["params"]["message_thread_id"]) == str(topic)  # answered in that topic
