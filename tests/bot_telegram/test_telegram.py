"""The Telegram adapter against a real peer: the telegram-test-api emulator (tests/telegram_emulator).

The bot runs as it does in production (runtime, service, SQLite, python-telegram-bot polling) with
the tiny model; users write through the emulator's client API and the tests read what they would
see: the bot's messages in their chat, as last edited. Needs Node.js and `npm ci --prefix
tests/telegram_emulator` (make install-test does it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

import pytest

from bot.chat import messages
from bot.chat.commands import ChatKey
from bot.telegram import outbox as telegram_outbox
from bot.telegram.adapter import TelegramOutput
from bot.telegram.outbox import split
from config import ChatSection, Config, GenerationSection, ModelSection, TelegramSection
from telegram_emulator.emulator import free_port
from telegram_emulator.peer import LENGTH, bot_config, running_bot

sys.path.append(str(Path(__file__).resolve().parents[2]))  # benchmarks/ holds scripts, not an installed package
from benchmarks import telegram_load  # noqa: E402

from conftest import TELEGRAM_BOT_USERNAME as BOT_USERNAME  # noqa: E402
EDIT_INTERVAL_S = 0.3


@pytest.fixture
def config(emulator, tiny_model_dir, tmp_path) -> Config:
    return bot_config(emulator, tiny_model_dir, tmp_path,
                      ChatSection(length=LENGTH, min_length=10, rate_limit_per_minute=0),
                      edit_interval_s=EDIT_INTERVAL_S)


@pytest.fixture
async def bot(config, token):
    async with running_bot(config, token) as adapter:
        yield adapter


def help_text() -> str:
    return messages.HELP.format(tmin="0,1", tmax="2", lmin=10, lmax=1000)


async def test_start_and_ayuda_list_the_commands(bot, peer):
    assert await peer.reply_to("/start") == help_text()
    assert await peer.reply_to("/ayuda") == help_text()
    for command in ("/cervantes", "/continuar", "/temperatura", "/longitud", "/olvidar", "/ayuda"):
        assert command in help_text()
    published = [p for p in await peer.calls("setMyCommands") if "scope" not in p["params"]]
    menu = {c["command"]: c["description"] for c in json.loads(published[0]["params"]["commands"])}
    assert menu["cervantes"] == "Continúa tu frase con la prosa de Don Quijote."
    assert set(menu) == {"cervantes", "continuar", "temperatura", "longitud", "olvidar", "ayuda"}


async def test_a_reply_ready_at_once_goes_out_as_one_message_without_edits(bot, peer):
    seed = "En un lugar de la Mancha"
    (reply,) = await peer.continuation(f"/cervantes {seed}", seed)
    assert reply.startswith(seed) and len(reply) == len(seed) + LENGTH
    await asyncio.sleep(EDIT_INTERVAL_S * 2)
    assert await peer.replies(1001) == [reply]  # no duplicate, no extra

    (post,) = await peer.calls("sendMessage", 1001)
    assert post["params"]["text"] == reply  # the whole text in its only request
    assert "parse_mode" not in post["params"]  # plain text: a seed cannot inject formatting
    assert await peer.calls("editMessageText", 1001) == []
    assert await peer.calls("sendChatAction", 1001) == []  # no "typing" for a reply ready within a second


async def _slowly(pieces, pause_s):
    for piece in pieces:
        yield piece
        await asyncio.sleep(pause_s)


async def test_a_slow_reply_is_posted_after_a_second_and_edited_as_it_grows(bot, peer):
    pieces = ["En un lugar", " de la Mancha,", " de cuyo nombre", " no quiero acordarme,", " no ha mucho."]
    out = TelegramOutput(bot.outbox, 3003, ChatKey("telegram", "3003"))
    started = time.time()
    await out.stream(_slowly(pieces, 0.5))
    assert (await out.delivery)["delivery"] == "delivered"

    assert await peer.replies(3003) == ["".join(pieces)]
    (post,) = await peer.calls("sendMessage", 3003)
    assert post["at"] / 1000 - started >= 0.95  # nothing shown while it might still come whole
    edits = await peer.calls("editMessageText", 3003)
    assert edits and edits[-1]["params"]["text"] == "".join(pieces)
    times = [post["at"]] + [e["at"] for e in edits]
    assert all(b - a >= 1000 * 0.95 for a, b in zip(times, times[1:])), times  # one request a second


async def test_temperatura_takes_good_values_and_explains_bad_ones(bot, peer):
    assert await peer.reply_to("/temperatura 0,8") == messages.TEMPERATURE_SET.format(value="0,8")
    assert await peer.reply_to("/temperatura") == messages.TEMPERATURE_IS.format(value="0,8", tmin="0,1", tmax="2")
    bad = messages.TEMPERATURE_BAD.format(tmin="0,1", tmax="2")
    assert await peer.reply_to("/temperatura caliente") == bad
    assert await peer.reply_to("/temperatura 7") == bad
    assert await peer.reply_to("/temperatura") == messages.TEMPERATURE_IS.format(value="0,8", tmin="0,1", tmax="2")


async def test_group_commands_addressed_to_this_bot_only(bot, peer):
    group = -1001234
    await peer.say("/cervantes@OtroBot En un lugar", group, chat_type="supergroup")
    await peer.say("/nocomando", group, chat_type="supergroup")  # another bot's, maybe: no answer
    assert await peer.reply_to(f"/ayuda@{BOT_USERNAME}", group, chat_type="supergroup") == help_text()
    (reply,) = await peer.continuation(f"/cervantes@{BOT_USERNAME} Sancho Panza", "Sancho Panza", group,
                                       chat_type="supergroup")
    assert reply.startswith("Sancho Panza")
    await asyncio.sleep(EDIT_INTERVAL_S * 2)
    assert await peer.replies(group) == [help_text(), reply]


async def test_many_chats_at_once_each_get_one_reply_with_their_own_seed(bot, peer):
    seeds = {2001: "En un lugar", 2002: "Sancho Panza", 2003: "la Mancha", 2004: "un hidalgo", 2005: "galgo corredor"}
    await asyncio.gather(*(peer.say(f"/cervantes {seed}", chat) for chat, seed in seeds.items()))
    for chat, seed in seeds.items():
        await peer.wait_for(chat, lambda r, seed=seed: r and len(r[0]) >= len(seed) + LENGTH)
    await asyncio.sleep(EDIT_INTERVAL_S * 2)
    for chat, seed in seeds.items():
        (reply,) = await peer.replies(chat)
        assert reply.startswith(seed) and len(reply) == len(seed) + LENGTH


async def test_settings_survive_a_restart(config, token, peer):
    async with running_bot(config, token):
        assert await peer.reply_to("/temperatura 1,5") == messages.TEMPERATURE_SET.format(value="1,5")
    async with running_bot(config, token):
        assert await peer.reply_to("/temperatura") == messages.TEMPERATURE_IS.format(value="1,5", tmin="0,1", tmax="2")
    await asyncio.sleep(0.5)
    assert len(await peer.replies(1001)) == 2  # the first command was not handled again after the restart


@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")  # PTB's own RetryAfter
async def test_telegram_asking_to_wait_delays_the_reply_without_duplicating_it(bot, peer):
    await peer.fail_next("sendMessage", error_code=429, description="Too Many Requests: retry after 1",
                         retry_after=1)
    started = time.monotonic()
    assert await peer.reply_to("/ayuda") == help_text()
    assert time.monotonic() - started >= 1.0
    await peer.fail_next("sendMessage", error_code=502, description="Bad Gateway")
    assert await peer.reply_to("/ayuda") == help_text()  # a server error is retried
    await asyncio.sleep(0.5)
    assert await peer.replies(1001) == [help_text(), help_text()]


async def test_a_server_error_while_a_reply_is_edited_is_logged_by_tag_and_the_reply_completes(
        bot, peer, caplog, monkeypatch):
    monkeypatch.setattr(telegram_outbox, "BACKOFF_S", 0.01)
    caplog.set_level(logging.INFO)
    chat = ChatKey("telegram", "3002")
    pieces = ["En un lugar", " de la Mancha,", " de cuyo nombre", " no quiero acordarme."]

    await peer.fail_next("editMessageText", error_code=500, description="Internal Server Error", times=4)
    out = TelegramOutput(bot.outbox, 3002, chat)
    await out.stream(_slowly(pieces, 0.6))
    assert (await out.delivery)["delivery"] == "delivered"

    assert await peer.replies(3002) == ["".join(pieces)]  # the full text, in one message
    assert len(await peer.calls("sendMessage", 3002)) == 1
    assert len(await peer.calls("editMessageText", 3002)) > 4  # edits went on after the failures
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and set(warnings) == {
        f"editMessageText failed for chat {chat.tag}: NetworkError: Internal Server Error"}
    assert "3002" not in caplog.text


async def test_a_group_that_becomes_a_supergroup_keeps_its_settings_and_continuation(bot, peer, caplog):
    caplog.set_level(logging.INFO)
    group, supergroup = -5001, -1005001
    await peer.set_member(group, 501, "creator", chat_type="group")  # settings are the admins'
    assert await peer.reply_to("/temperatura 1,5", group, chat_type="group") == \
        messages.TEMPERATURE_SET.format(value="1,5")
    await peer.continuation("/cervantes Sancho", "Sancho", group, chat_type="group")

    await peer.upgrade(group, supergroup)
    moved_to = ChatKey("telegram", str(supergroup))
    deadline = time.monotonic() + 10
    while (await bot.commands.storage.get_settings(moved_to)).temperature is None:  # the service messages handled
        assert time.monotonic() < deadline, "the chat's settings never reached the supergroup"
        await asyncio.sleep(0.05)

    assert await peer.reply_to("/temperatura", supergroup, chat_type="supergroup") == \
        messages.TEMPERATURE_IS.format(value="1,5", tmin="0,1", tmax="2")
    (reply,) = await peer.continuation("/continuar", "", supergroup, chat_type="supergroup")
    assert len(reply) == LENGTH  # it went on from where the group's reply stopped
    assert str(supergroup) not in caplog.text and str(group) not in caplog.text
    assert ChatKey("telegram", str(group)).tag in caplog.text and moved_to.tag in caplog.text


async def test_a_reply_to_a_group_that_moved_goes_to_the_supergroup_with_the_settings(bot, peer, caplog):
    caplog.set_level(logging.INFO)
    group, supergroup = -5002, -1005002
    temperature_is = messages.TEMPERATURE_IS.format(value="1,5", tmin="0,1", tmax="2")
    await peer.set_member(group, 501, "creator", chat_type="group")  # settings are the admins'
    assert await peer.reply_to("/temperatura 1,5", group, chat_type="group") == \
        messages.TEMPERATURE_SET.format(value="1,5")

    # The group has just become a supergroup; the bot learns it from the error to its reply.
    await peer.fail_next("sendMessage", error_code=400, migrate_to_chat_id=supergroup,
                         description="Bad Request: group chat was upgraded to a supergroup chat")
    await peer.say("/temperatura", group, chat_type="group")
    assert await peer.wait_for(supergroup, lambda r: len(r) >= 1) == [temperature_is]
    assert await peer.reply_to("/temperatura", supergroup, chat_type="supergroup") == temperature_is
    assert await peer.replies(group) == [messages.TEMPERATURE_SET.format(value="1,5")]
    assert str(supergroup) not in caplog.text and str(group) not in caplog.text

    # A streamed reply that learns it on its first post goes on in the supergroup, and /continuar too.
    group, supergroup = -5003, -1005003
    await peer.fail_next("sendMessage", error_code=400, migrate_to_chat_id=supergroup,
                         description="Bad Request: group chat was upgraded to a supergroup chat")
    await peer.say("/cervantes Sancho", group, chat_type="group")
    await peer.wait_for(supergroup, lambda r: r and len(r[0]) >= len("Sancho") + LENGTH)
    await asyncio.sleep(EDIT_INTERVAL_S * 2)
    (reply,) = await peer.replies(supergroup)
    assert reply.startswith("Sancho") and len(reply) == len("Sancho") + LENGTH
    assert await peer.replies(group) == []
    (more,) = await peer.continuation("/continuar", "", supergroup, chat_type="supergroup")
    assert len(more) == LENGTH


async def test_webhook_mode_receives_updates_with_the_secret(config, token, peer, monkeypatch):
    pytest.importorskip("tornado", reason="webhook mode needs python-telegram-bot[webhooks] (tornado)")
    port = free_port()
    monkeypatch.setenv("TELEGRAM_WEBHOOK_SECRET", "secreto-de-prueba")
    config = dataclasses.replace(config, telegram=dataclasses.replace(
        config.telegram, mode="webhook", listen="127.0.0.1", port=port,
        webhook_url=f"http://127.0.0.1:{port}/telegram/hook"))
    async with running_bot(config, token):
        (hook,) = await peer.calls("setWebhook")
        assert hook["params"]["secret_token"] == "secreto-de-prueba"
        assert await peer.reply_to("/ayuda") == help_text()
        # button presses arrive too: the webhook asked for them (the emulator drops unasked types)
        # and changes of members, which drop a group's list of admins
        assert {"message", "callback_query", "inline_query", "chat_member", "my_chat_member"} <= set(
            json.loads(hook["params"]["allowed_updates"]))
        await peer.say("/cervantes Sancho")
        text = (await peer.wait_for(1001, lambda r: len(r) >= 2 and r[-1].startswith("Sancho")))[-1]
        while not (await peer.messages(1001))[-1]["buttons"]:
            await asyncio.sleep(0.05)
        await peer.press(1001, (await peer.messages(1001))[-1]["message_id"], "Continuar")
        assert (await peer.wait_for(1001, lambda r: len(r) >= 3))[-1] != text


async def test_the_token_never_reaches_the_logs(config, token, peer, caplog):
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "telegram"):  # cervantes' logging setup (another test may have run it) quiets them
        caplog.set_level(logging.DEBUG, logger=name)
    async with running_bot(config, token):
        assert await peer.reply_to("/ayuda") == help_text()
    assert "bot<token>/sendMessage" in caplog.text  # request URLs were logged, blanked
    assert token.split(":")[1] not in caplog.text


async def test_a_long_reply_goes_out_in_several_messages(bot, peer):
    text = ("En un lugar de la Mancha, de cuyo nombre no quiero acordarme. " * 140).strip()
    out = TelegramOutput(bot.outbox, 3001, ChatKey("telegram", "3001"))
    await out.send(text)
    assert (await out.delivery)["delivery"] == "delivered"
    replies = await peer.replies(3001)
    assert len(replies) == 3 and all(len(r) <= 4096 for r in replies)
    assert "".join(replies) == text


def test_split_cuts_at_spaces_and_counts_like_telegram():
    assert split("hola") == ["hola"]
    parts = split("palabra " * 1000)
    assert "".join(parts) == "palabra " * 1000 and all(p.endswith(" ") for p in parts)
    assert [len(p) for p in split("😀" * 3000)] == [2048, 952]  # UTF-16: an emoji counts twice


async def test_fifty_chats_at_once_each_command_answered_once_in_its_own_chat(emulator, tiny_model_dir):
    config = dataclasses.replace(
        Config(), model=ModelSection(path=str(tiny_model_dir), device="cpu"),
        generation=GenerationSection(chunk_steps=10), chat=ChatSection(length=50, min_length=10),
        telegram=TelegramSection(edit_interval_s=0.2))
    report = await telegram_load.run(config, emulator, chats=50, commands=2)
    assert report["problems"] == []
    assert report["answered"] == report["commands"] == 100
    assert report["exactly_once"] and report["apologies"] == 0


async def test_each_forum_topic_is_a_chat_of_its_own_and_gets_its_replies(bot, peer):
    forum = -1007001
    await peer.set_member(forum, 501, "creator")  # settings are the admins'
    await peer.say("/temperatura 1,5", forum, chat_type="supergroup", topic=11)
    await peer.wait_for(forum, lambda r: len(r) == 1)
    await peer.say("/temperatura", forum, chat_type="supergroup", topic=12)
    replies = await peer.wait_for(forum, lambda r: len(r) == 2)
    assert replies == [messages.TEMPERATURE_SET.format(value="1,5"),
                       messages.TEMPERATURE_IS.format(value="0,8", tmin="0,1", tmax="2")]  # topic 12: its own (the default)
    posts = await peer.calls("sendMessage", forum)
    assert [p["params"].get("message_thread_id") for p in posts] == ["11", "12"]  # each in its topic


async def test_health_sees_polling_and_a_revoked_token_ends_the_bot(bot, peer):
    assert bot.connected and bot.last_ok is not None
    await peer.fail_next("getUpdates", error_code=401, description="Unauthorized")
    await peer.say("/ayuda")  # wakes the long poll
    with pytest.raises(RuntimeError, match="401"):
        await asyncio.wait_for(asyncio.shield(bot.failed), 30)  # what `serve` waits on: it exits with this
    assert not bot.connected


async def test_a_group_that_moves_while_a_reply_is_written_keeps_that_reply_to_continue(bot, peer):
    group, supergroup = -5004, -1005004
    await peer.set_member(group, 501, "creator", chat_type="group")  # settings are the admins'
    assert await peer.reply_to("/longitud 1000", group, chat_type="group") == \
        messages.LENGTH_SET.format(value=1000)
    await peer.say("/cervantes Sancho", group, chat_type="group")  # a hundred chunks: it takes a while
    await peer.upgrade(group, supergroup)  # meanwhile, the group becomes a supergroup
    await peer.wait_for(group, lambda r: len(r) == 2 and len(r[1]) >= 1000, timeout=60)
    (more,) = await peer.continuation("/continuar", "", supergroup, chat_type="supergroup")
    assert len(more) == 1000  # the group's /longitud moved along, and it went on from its reply
    assert more != messages.NOTHING_TO_CONTINUE
    stored = await bot.commands.storage.get_continuation(ChatKey("telegram", str(supergroup)))
    assert stored is not None and stored.tail.endswith(more[-100:])
    assert await bot.commands.storage.get_continuation(ChatKey("telegram", str(group))) is None


async def test_a_reply_whose_end_past_4096_is_only_whitespace_is_delivered_and_the_chat_goes_on(bot, peer):
    """Character 4096 and all after it blank: no empty last message (Telegram refuses those), the
    reply is delivered with its buttons on its one message, and the chat's next reply follows it."""
    import recorder

    words = ("En un lugar de la Mancha, de cuyo nombre no quiero acordarme " * 80)[:4095]
    assert not words[-1].isspace()
    text = words + " \n "  # character 4096 is the space
    written = recorder.written(text)
    chat = ChatKey("telegram", "3011")
    first = TelegramOutput(bot.outbox, 3011, chat)
    await first.stream(written)
    second = TelegramOutput(bot.outbox, 3011, chat)
    await second.send("Y después, esto.")
    assert (await asyncio.wait_for(first.delivery, 20))["delivery"] == "delivered"
    assert (await asyncio.wait_for(second.delivery, 20))["delivery"] == "delivered"
    shown = await peer.messages(3011)
    assert [m["text"] for m in shown] == [words + " ", "Y después, esto."]
    assert [label for label, _ in shown[0]["buttons"]] == ["Continuar", "Otra"]


def test_split_never_makes_a_blank_part():
    assert split("a" * 4096 + " \n ") == ["a" * 4096]
    assert split("a" * 4095 + " " * 10) == ["a" * 4095 + " "]
    assert split("a" * 4095 + " " * 10 + "b") == ["a" * 4095 + " ", " " * 9 + "b"]  # earlier cuts kept
    assert split(" " * 5000 + "abc") == [" " * 904 + "abc"]  # nor a blank first one
    assert split("   ") == ["   "]  # a blank reply stays one (blank) message: the adapters show "…"
