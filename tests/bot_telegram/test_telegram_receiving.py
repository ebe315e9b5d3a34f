"""bot/telegram/receiving.py with the adapter, against the emulator: a command is in the inbox before
Telegram hears that its update was received; what a crash left in the inbox runs first at the
next start, in each chat's order, unless it is older than [telegram] max_delivery_s; and a reply a
crash cut short is finished in the message it had begun."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import httpx
import pytest

from bot.chat import messages
from bot.chat.inbox import Inbox
from bot.telegram.adapter import TelegramOutput
from config import ChatSection
from storage import ChatKey, Storage
from storage.inbox import Entry
from storage.inbox import Inbox as Store
from telegram_emulator.emulator import free_port
from telegram_emulator.peer import LENGTH, bot_config, running_bot


def config_for(emulator, tiny_model_dir, tmp_path):
    return bot_config(emulator, tiny_model_dir, tmp_path, ChatSection(length=LENGTH, rate_limit_per_minute=0))


def slow_disk(monkeypatch) -> tuple[asyncio.Event, asyncio.Event]:
    """The inbox's store held: `storing` is set once a command is being stored, which then waits
    for `release`."""
    storing, release = asyncio.Event(), asyncio.Event()
    receive = Inbox.receive

    async def held(self, entries):
        storing.set()
        await release.wait()
        return await receive(self, entries)

    monkeypatch.setattr(Inbox, "receive", held)
    return storing, release


async def test_an_update_stays_unconfirmed_until_its_command_is_stored(
        emulator, tiny_model_dir, tmp_path, token, peer, monkeypatch):
    storing, release = slow_disk(monkeypatch)
    async with running_bot(config_for(emulator, tiny_model_dir, tmp_path), token) as bot:
        await peer.say("/ayuda")
        await asyncio.wait_for(storing.wait(), 15)
        unconfirmed = await peer.unconfirmed()
        await asyncio.sleep(1.0)  # a getUpdates right after the handover would have confirmed it by now
        assert await peer.unconfirmed() == unconfirmed != []  # a crash now: Telegram sends it again
        release.set()
        await peer.wait_for(1001, lambda r: r)
        deadline = time.monotonic() + 15
        while await peer.unconfirmed() or await bot.inbox.store.pending("telegram", since=0):
            assert time.monotonic() < deadline, "the update was never confirmed, or its command never done"
            await asyncio.sleep(0.1)


async def test_commands_left_by_a_crash_run_first_in_order_and_old_ones_not_at_all(
        emulator, tiny_model_dir, tmp_path, token, peer):
    config = config_for(emulator, tiny_model_dir, tmp_path)
    now = time.time()
    async with await Storage.open(config.storage.path) as storage:  # what a killed bot left behind
        await Store(storage).add([
            Entry(ChatKey("telegram", "1001"), "cervantes", "Sancho", None, now - 5, {"chat_id": 1001}),
            Entry(ChatKey("telegram", "1001"), "temperatura", "1,5", None, now - 4, {"chat_id": 1001}),
            Entry(ChatKey("telegram", "1002"), "ayuda", "", None, now - config.telegram.max_delivery_s - 1,
                  {"chat_id": 1002}),
        ])
    async with running_bot(config, token):
        await peer.say("/longitud 80")  # new, after the start: after the chat's older commands
        replies = await peer.wait_for(1001, lambda r: len(r) >= 3)
        await asyncio.sleep(1.0)
        assert await peer.replies(1002) == []  # too old: its reply would come too late to mean anything
        assert await peer.replies(1001) == replies
    written, temperature, length = replies
    assert written.startswith("Sancho") and len(written) == len("Sancho") + LENGTH  # before /longitud 80
    assert temperature == messages.TEMPERATURE_SET.format(value="1,5")
    assert length == messages.LENGTH_SET.format(value=80)


async def test_a_reply_a_crash_cut_short_is_finished_in_its_own_message(
        emulator, tiny_model_dir, tmp_path, token, peer):
    config = config_for(emulator, tiny_model_dir, tmp_path)
    async with running_bot(config, token) as bot:  # the killed process had shown the reply's beginning
        await TelegramOutput(bot.outbox, 1001, ChatKey("telegram", "1001")).send("Sancho dijo: -Sin")
        (begun,) = await peer.messages(1001)
    async with await Storage.open(config.storage.path) as storage:  # and noted it in the inbox
        await Store(storage).add([Entry(ChatKey("telegram", "1001"), "cervantes", "Sancho dijo", None,
                                        time.time() - 3, {"chat_id": 1001, "begun": begun["message_id"]})])
    async with running_bot(config, token):
        (reply,) = await peer.wait_for(1001, lambda r: len(r[0]) == len("Sancho dijo") + LENGTH)
        await asyncio.sleep(1.0)
        assert await peer.replies(1001) == [reply]  # one message: the reply, not a beginning and a reply
    assert reply.startswith("Sancho dijo")


async def test_a_reply_that_shows_before_it_is_complete_notes_its_message_in_the_inbox(
        emulator, tiny_model_dir, tmp_path, token, peer):
    config = bot_config(emulator, tiny_model_dir, tmp_path, ChatSection(length=LENGTH, rate_limit_per_minute=0),
                        stream_after_s=0.0)
    more = asyncio.Event()

    async def slow_reply():
        yield "Sancho dijo: "
        await more.wait()  # still being written
        yield "-Sin duda."

    async with running_bot(config, token) as bot:
        (entry,) = await bot.inbox.receive([Entry(ChatKey("telegram", "1001"), "cervantes", "Sancho dijo", None,
                                                  time.time(), {"chat_id": 1001})])
        streaming = asyncio.create_task(bot._output(entry).stream(slow_reply()))
        (shown,) = await peer.wait_for(1001, lambda r: r)
        deadline = time.monotonic() + 10
        while (await bot.inbox.store.pending("telegram", since=0))[0].answer.get("begun") is None:
            assert time.monotonic() < deadline, "the message the reply began in was never noted"
            await asyncio.sleep(0.05)
        (pending,) = await bot.inbox.store.pending("telegram", since=0)
        assert pending.answer == {"chat_id": 1001, "begun": (await peer.messages(1001))[0]["message_id"]}
        more.set()
        await streaming
    assert shown == "Sancho dijo: "


async def test_a_webhook_delivery_is_answered_only_once_its_command_is_stored(
        emulator, tiny_model_dir, tmp_path, token, peer, monkeypatch):
    """Telegram, in webhook mode, sends an update until a delivery is answered 2xx."""
    pytest.importorskip("tornado", reason="webhook mode needs python-telegram-bot[webhooks] (tornado)")
    storing, release = slow_disk(monkeypatch)
    monkeypatch.setenv("TELEGRAM_WEBHOOK_SECRET", "secreto-de-prueba")
    port = free_port()
    config = config_for(emulator, tiny_model_dir, tmp_path)
    config = dataclasses.replace(config, telegram=dataclasses.replace(
        config.telegram, mode="webhook", listen="127.0.0.1", port=port,
        webhook_url=f"http://127.0.0.1:{port}/telegram/hook"))
    update = {"update_id": 7001, "message": {
        "message_id": 1, "date": int(time.time()), "text": "/ayuda", "chat": {"id": 1001, "type": "private"},
        "from": {"id": 501, "is_bot": False, "first_name": "Alonso"}}}
    async with running_bot(config, token), httpx.AsyncClient() as telegram:
        delivery = asyncio.create_task(telegram.post(
            f"http://127.0.0.1:{port}/telegram/hook", json=update,
            headers={"X-Telegram-Bot-Api-Secret-Token": "secreto-de-prueba"}))
        await asyncio.wait_for(storing.wait(), 15)
        await asyncio.sleep(0.5)
        assert not delivery.done()  # not answered: a crash now, and Telegram delivers it again
        release.set()
        assert (await delivery).status_code == 200
        await peer.wait_for(1001, lambda r: r)
