"""The outbox: every reply delivered whole, exactly once, within Telegram's flood limits.

End to end against the emulator in flood mode (tests/telegram_emulator/launch.js says which rule of
the Bot API FAQ each limit models: 30 a second per bot, about 1 a second per chat, 20 a minute per
group, 429 with retry_after, longer bans for requests sent into one), and the outbox's own choices
on a fake bot.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.append(str(Path(__file__).resolve().parents[2]))  # benchmarks/ holds scripts, not a package
from benchmarks.telegram_load import seed_of  # noqa: E402
from bot.chat import messages
from bot.telegram.outbox import EDIT, FINAL, FIRST_POST, Limits, Outbox, Window
from config import ChatSection, Config
from storage import ChatKey
from telegram_emulator.peer import LENGTH, bot_config, running_bot


@pytest.fixture
def config(emulator, tiny_model_dir, tmp_path) -> Config:
    """The bot with its default limits (12 commands a minute per chat, 6 per member in a group)."""
    return bot_config(emulator, tiny_model_dir, tmp_path, ChatSection(length=LENGTH, min_length=10))


async def _everything(peer) -> dict[int, list[str]]:
    """Every chat's bot messages, oldest first, as they read now."""
    answer = await peer.http.post("/getUpdatesHistory", json={"token": peer.token})
    chats: dict[int, list[str]] = {}
    for u in sorted((u for u in answer.json()["result"] if "chat_id" in u["message"]),
                    key=lambda u: u["messageId"]):
        chats.setdefault(int(u["message"]["chat_id"]), []).append(u["message"]["text"])
    return chats


async def _until(peer, done, timeout: float) -> dict[int, list[str]]:
    deadline = time.monotonic() + timeout
    while True:
        chats = await _everything(peer)
        if done(chats):
            return chats
        if time.monotonic() > deadline:
            pytest.fail(f"not every chat got its replies in {timeout} s: "
                        f"{ {c: [m[:30] for m in ms] for c, ms in chats.items()} }")
        await asyncio.sleep(0.2)


def _whole(reply: str, seed: str) -> bool:
    return reply.startswith(seed) and len(reply) == len(seed) + LENGTH


async def _assert_within_limits(peer) -> None:
    stats = await peer.flood_stats()
    refused = sum(stats["refused"].values())
    assert stats["sent_into_pending"] == 0, stats  # never a request into a pending retry_after
    assert refused <= 0.01 * stats["requests"], stats


async def test_a_hundred_private_chats_at_once_each_get_their_whole_reply_once(config, token, peer):
    await peer.flood()
    chats = {40_000 + i: seed_of(i) for i in range(100)}
    async with running_bot(config, token):
        await asyncio.gather(*(peer.say(f"/cervantes {seed}", chat, user_id=chat) for chat, seed in chats.items()))
        await _until(peer, lambda shown: all(
            shown.get(c) and _whole(shown[c][0], s) for c, s in chats.items()), timeout=60)
        await asyncio.sleep(1.5)  # a late duplicate or extra edit would show by now
        shown = await _everything(peer)
    for chat, seed in chats.items():
        (reply,) = shown[chat]
        assert _whole(reply, seed)
    assert len(await peer.calls("sendMessage")) == 100  # one message each: edits only for slow ones
    assert len(await peer.calls("editMessageText")) <= 100
    await _assert_within_limits(peer)


async def test_five_busy_groups_get_every_command_answered_within_the_group_limit(config, token, peer):
    await peer.flood()
    groups = [-70_001 - g for g in range(5)]
    members = range(25)
    async with running_bot(config, token):
        for member in members:  # 25 members each write once, all groups at once, within a few seconds
            await asyncio.gather(*(peer.say(f"/cervantes {seed_of(member)}", group, chat_type="group",
                                            user_id=900 + member) for group in groups))
            await asyncio.sleep(0.1)
        # 12 commands a minute per chat: 12 replies, then one "Despacio" notice for the other 13
        await _until(peer, lambda shown: all(len(shown.get(g, [])) >= 13 and all(
            m.startswith("Despacio") or len(m) >= LENGTH for m in shown[g]) for g in groups), timeout=90)
        await asyncio.sleep(2)
        shown = await _everything(peer)
    for group in groups:
        notices = [m for m in shown[group] if m.startswith("Despacio")]
        replies = [m for m in shown[group] if not m.startswith("Despacio")]
        assert len(notices) == 1 and notices[0].startswith(messages.RATE_LIMITED.split("{")[0])
        assert len(replies) == 12
        seeds = {seed_of(m) for m in members}
        assert all(any(_whole(r, s) for s in seeds) for r in replies)
        assert len({r.split(".")[0] for r in replies}) == 12  # twelve different commands, none twice
    await _assert_within_limits(peer)


async def test_a_429_storm_on_one_group_does_not_hold_up_other_chats(config, token, peer):
    await peer.flood()
    group = -80_001
    await peer.flood_storm(group, seconds=4, times=3)  # its next three requests each get a 4 s ban
    async with running_bot(config, token):
        await peer.say(f"/cervantes {seed_of(7)}", group, chat_type="group")
        await asyncio.sleep(0.2)
        started = time.monotonic()
        chats = {50_000 + i: seed_of(i) for i in range(20)}
        await asyncio.gather(*(peer.say(f"/cervantes {seed}", chat, user_id=chat) for chat, seed in chats.items()))
        await _until(peer, lambda shown: all(shown.get(c) and _whole(shown[c][0], s) for c, s in chats.items()),
                     timeout=30)
        others_s = time.monotonic() - started
        assert not (await _everything(peer)).get(group)  # still banned
        shown = await _until(peer, lambda shown: shown.get(group), timeout=30)
        group_s = time.monotonic() - started
        await asyncio.sleep(1.5)
        shown = await _everything(peer)
    assert others_s < group_s and group_s > 11.5  # three bans of 4 s, waited out by that group alone
    (reply,) = shown[group]
    assert _whole(reply, seed_of(7))
    stats = await peer.flood_stats()
    assert stats["sent_into_pending"] == 0 and stats["refused"] == {"group": 3}


# --- the outbox's own choices, on a fake bot -------------------------------------------------------


class FakeBot:
    """Records what the outbox sends; every request succeeds."""

    def __init__(self):
        self.sent: list[tuple[str, int, str]] = []
        self._ids = 0

    async def send_message(self, chat_id, text, **_):
        self._ids += 1
        self.sent.append(("post", chat_id, text))
        return SimpleNamespace(message_id=self._ids, chat_id=chat_id)

    async def edit_message_text(self, text, chat_id, message_id, **_):
        self.sent.append(("edit", chat_id, text))

    async def send_chat_action(self, chat_id, action, **_):
        self.sent.append(("typing", chat_id, action))


def test_a_window_counts_a_request_until_a_period_after_its_answer():
    window = Window(2, 1.0)
    window.take()
    window.take()
    assert window.room(5.0) == 0 and window.free_at(5.0) == float("inf")  # both still on their way
    window.answered(5.0)
    window.answered(5.5)
    assert window.room(5.9) == 0 and window.free_at(5.9) == 6.0
    assert window.room(6.0) == 1 and window.free_at(6.2) == 6.2


async def test_priorities_final_text_then_first_post_then_edit():
    outbox = Outbox(FakeBot())
    key = ChatKey("telegram", "1")
    streaming = outbox.reply(1, key)
    streaming.grow("En un lugar")
    assert streaming.next_request(may_stream=False) is None  # it may still come whole
    assert streaming.next_request(may_stream=True).priority == FIRST_POST
    streaming.posted.append([1, "En un lugar"])
    streaming.grow("En un lugar de la Mancha")
    assert streaming.next_request(may_stream=True).priority == EDIT
    streaming.finish()
    assert streaming.next_request(may_stream=True).priority == FINAL


async def test_when_the_budget_is_short_final_texts_go_first_and_edits_coalesce():
    bot = FakeBot()
    outbox = Outbox(bot, stream_after_s=0.0, edit_interval_s=0.0,
                    limits=Limits(bot_per_second=3, bot_margin_s=0.0, chat_interval_s=0.0, chat_margin_s=0.0))
    outbox.start()
    try:
        growing = outbox.reply(10, ChatKey("telegram", "10"))
        growing.grow("Sancho")
        await asyncio.sleep(0.05)  # its first post goes out
        for i in range(20):  # it grows fast while three other replies are finished
            growing.grow("Sancho" + " dijo" * (i + 1))
        finished = [outbox.reply(20 + i, ChatKey("telegram", str(20 + i))) for i in range(3)]
        for reply in finished:
            reply.grow("Ya está.")
            reply.finish()
        await asyncio.sleep(1.5)
        growing.finish()
        results = await asyncio.wait_for(asyncio.gather(*(r.done for r in [growing, *finished])), 5)
    finally:
        await outbox.close(grace_s=0)
    assert all(r["delivery"] == "delivered" for r in results)
    order = [(kind, chat) for kind, chat, _ in bot.sent]
    assert order[:4] == [("post", 10), ("post", 20), ("post", 21), ("post", 22)]  # final texts before edits
    edits = [text for kind, chat, text in bot.sent if kind == "edit"]
    assert len(edits) <= 3 and edits[-1] == "Sancho" + " dijo" * 20  # 20 changes, a few edits, the last whole


async def test_a_reply_that_cannot_go_out_in_time_is_dropped_and_counted():
    class Refusing(FakeBot):
        async def send_message(self, chat_id, text, **_):
            from telegram.error import RetryAfter
            raise RetryAfter(1)

    outbox = Outbox(Refusing(), max_delivery_s=0.5)
    outbox.start()
    try:
        reply = outbox.reply(5, ChatKey("telegram", "5"))
        reply.grow("Nunca llega.")
        reply.finish()
        fields = await asyncio.wait_for(reply.done, 5)
    finally:
        await outbox.close(grace_s=0)
    assert fields["delivery"] == "undelivered" and fields["throttled"] == 1
    assert outbox.outcomes["undelivered"] == 1 and outbox.throttled["chat"] == 1


async def test_the_worker_sleeps_while_private_replies_are_being_written():
    """Replies posted and waiting for more text, and replies with nothing to show yet ("typing"),
    give the worker nothing to do until their text grows: it must not spin meanwhile (it took 5 ms
    passes, about 180 a second, out of the CPU the model needs). Typing still goes out on time,
    and each reply ends delivered whole."""
    bot = FakeBot()
    outbox = Outbox(bot, stream_after_s=0.1, edit_interval_s=0.2)
    passes = 0
    dispatch = outbox._dispatch

    def counted(now):
        nonlocal passes
        passes += 1
        return dispatch(now)

    outbox._dispatch = counted
    outbox.start()
    try:
        posted = [outbox.reply(100 + i, ChatKey("telegram", str(100 + i))) for i in range(20)]
        silent = [outbox.reply(200 + i, ChatKey("telegram", str(200 + i))) for i in range(5)]
        for reply in posted:
            reply.grow("Sancho dijo")
        await asyncio.sleep(0.6)  # past stream_after_s: the first posts went out
        assert sum(kind == "post" for kind, _, _ in bot.sent) == 20
        passes, began = 0, time.monotonic()
        await asyncio.sleep(2.0)  # nothing grows; at 1 s the silent ones show "typing", once
        idle_passes = passes / (time.monotonic() - began)
        typing = [chat for kind, chat, _ in bot.sent if kind == "typing"]
        for reply in posted + silent:
            reply.grow("Sancho dijo que no")
            reply.finish()
        results = await asyncio.wait_for(asyncio.gather(*(r.done for r in posted + silent)), 10)
    finally:
        await outbox.close(grace_s=0)
    assert idle_passes <= 5, f"{idle_passes:.0f} passes a second with nothing to send"
    assert sorted(typing) == list(range(200, 205))  # once each, within the 2 s
    assert all(r["delivery"] == "delivered" for r in results)
    final = {chat: text for kind, chat, text in bot.sent if kind in ("post", "edit")}
    assert set(final.values()) == {"Sancho dijo que no"} and len(final) == 25


async def test_a_stop_under_load_keeps_its_budget_and_counts_what_was_not_delivered(
        emulator, tiny_model_dir, tmp_path, token, peer, caplog):
    """20 private chats and a group of 20 members each ask for 1000 characters, written one at a
    time, and the group's replies wait on its 20 messages a minute: the stop comes with most of it
    still to write or deliver. It ends within its budget, and every command gets its request line:
    delivered, or counted as `stopping` (cut while written, or still queued in the outbox)."""
    import dataclasses
    import logging

    from bot.process import serve
    from bot.process.runtime import open_runtime
    from bot.telegram import adapter as telegram_adapter
    from config import GenerationSection

    caplog.set_level(logging.INFO, "cervantes.requests")
    config = bot_config(emulator, tiny_model_dir, tmp_path, ChatSection(
        length=1000, min_length=10, rate_limit_per_minute=0, user_rate_limit_per_minute=0))
    config = dataclasses.replace(config, generation=GenerationSection(chunk_steps=10, max_batch=1))
    await peer.flood()
    group = -90_001

    def lines() -> list[dict]:
        return [r.fields for r in caplog.records if r.name == "cervantes.requests"]

    async with open_runtime(config) as runtime:
        adapter = telegram_adapter.TelegramAdapter(runtime.commands, config.telegram, token)
        await adapter.start()
        try:
            await asyncio.gather(*(peer.say(f"/cervantes {seed_of(i)}", 60_000 + i, user_id=60_000 + i)
                                   for i in range(20)))
            await asyncio.gather(*(peer.say(f"/cervantes {seed_of(i)}", group, chat_type="group", user_id=900 + i)
                                   for i in range(20)))
            deadline = time.monotonic() + 30
            while (await peer.http.post(f"/bot{token}/getWebhookInfo")).json()["result"]["pending_update_count"]:
                assert time.monotonic() < deadline, "the bot did not take the 40 commands"  # confirmed by offset
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)
        finally:
            began = time.monotonic()
            await asyncio.wait_for(adapter.stop(), 60)
            took = time.monotonic() - began
    assert took <= serve.STOP_BUDGET_S, f"the stop took {took:.1f} s"  # what serve gives the adapters
    seen = lines()
    assert len(seen) == 40, seen
    stopped = [f for f in seen if f.get("delivery") == "stopping" or f["outcome"] == "stopping"]
    assert all(f.get("delivery") == "delivered" for f in seen if f not in stopped), seen
    assert len(stopped) >= 20, seen  # the group's 20 a minute alone leave most of its replies queued
    outcomes = adapter.outbox.outcomes
    assert set(outcomes) <= {"delivered", "stopping"} and outcomes["stopping"] >= 1, outcomes
