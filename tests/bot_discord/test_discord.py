"""The Discord adapter against simcord: discord.py's own gateway parsers and models, with Discord's
REST side in memory. A real runtime answers: the tiny model, the generation service, SQLite.

simcord runs the bot's code on a virtual clock that moves only when a test advances it: inside a
handler time.monotonic() stands still, which makes the pace of edits exact to test.
"""

from __future__ import annotations

import dataclasses
import time

import discord
import pytest
import simcord
from conftest import TINY_TEXT, Clock
from simcord.components import walk_components

from bot.chat import buttons, messages
from bot.discord.adapter import MAX_CHARS, DiscordAdapter, split
from bot.process.runtime import open_runtime
from bot.chat.parsing import format_number
from config import ChatSection, Config
from storage import ChatKey, Storage
from storage.inbox import Entry
from storage.inbox import Inbox as Store

LENGTH = 60  # characters a reply adds to its seed
SLASH = ("cervantes", "continuar", "temperatura", "longitud", "olvidar", "ajustes", "ayuda")
SETTINGS = ("temperatura", "longitud", "olvidar", "ajustes")  # for those who manage the server


DEFAULT_TEMPERATURE = format_number(ChatSection().temperature)  # "0,8": as /temperatura shows it

@pytest.fixture(scope="module")
def chatty_model_dir(tmp_path_factory, tiny_lexicon):
    """A tiny model that also knows "!", "@", "<", ">" and digits: its replies can echo a command
    or a mention from the seed, as a model trained on chat logs could."""
    import tensorflow as tf

    from model import bundle
    from model.network import Hyperparameters, build
    from model.vocab import Vocab

    vocab = Vocab.from_text(TINY_TEXT + "!@<>0123456789")
    tf.keras.utils.set_random_seed(1234)
    network = build(Hyperparameters(len(vocab), embedding_dim=8, rnn_units=16))
    return bundle.save(tmp_path_factory.mktemp("chatty-model"), network, vocab, tiny_lexicon)


@pytest.fixture
def model_dir(request):
    """The tiny model, or: @pytest.mark.parametrize("model_dir", ["chatty"], indirect=True)."""
    return request.getfixturevalue(f"{getattr(request, 'param', 'tiny')}_model_dir")


@pytest.fixture
def edit_interval_s():
    return 0.0  # every piece an edit; tests of the throttle parametrize this


@pytest.fixture
def discord_options():
    return {}


@pytest.fixture
def chat_options():
    return {}


@pytest.fixture
def storage_options():
    return {}


@pytest.fixture
def config(model_dir, edit_interval_s, discord_options, chat_options, storage_options, tmp_path) -> Config:
    c = Config()
    return dataclasses.replace(
        c,
        model=dataclasses.replace(c.model, path=str(model_dir)),
        storage=dataclasses.replace(c.storage, path=str(tmp_path / "cervantes.db"), **storage_options),
        # The generation worker starts outside simcord and reads the real clock, while a request's
        # deadline is taken on simcord's virtual one: a finite timeout would expire at once.
        generation=dataclasses.replace(c.generation, request_timeout_s=1e9, chunk_steps=10),  # pieces to stream
        chat=dataclasses.replace(c.chat, length=LENGTH, min_length=10, max_length=2500,
                                 rate_limit_per_minute=0, **chat_options),
        discord=dataclasses.replace(c.discord, edit_interval_s=edit_interval_s, **discord_options),
    )


@pytest.fixture
async def env(config):
    async with open_runtime(config) as runtime:
        adapter = DiscordAdapter(runtime.commands, config.discord, token="never used by simcord", inbox=runtime.inbox)
        # shard_count 0 asks Discord for its recommendation, which simcord does not model: one shard,
        # what Discord recommends below 1,000 servers
        env = simcord.Env(adapter.client, settle_timeout=30,  # the first generation compiles
                          shard_count=None if config.discord.shard_count else 1)
        await env.start()
        try:
            yield env
        finally:
            await env.shutdown()
        env.raise_errors()  # nothing the bot did raised


@pytest.fixture
def guild(env):
    return env.create_guild()


@pytest.fixture
def channel(guild):
    return guild.create_text_channel("general")


@pytest.fixture
def alice(env, guild):
    """A member who manages the server: settings are hers to change."""
    managers = guild.create_role("gestores", permissions=discord.Permissions(manage_guild=True))
    return guild.add_member(env.create_user("alice"), roles=[managers])


@pytest.fixture
def bob(env, guild):
    """A member, no more."""
    return guild.add_member(env.create_user("bob"))


def edits_of(env) -> list[str]:
    """The contents the bot gave slash commands' responses, edit after edit."""
    return [r.json["content"] for r in env.http_requests
            if r.method == "PATCH" and r.path.endswith("/messages/@original")]


def callbacks(env) -> list[int]:
    """How the bot answered each interaction: 4 a message, 5 deferred, ..."""
    return [r.json["type"] for r in env.http_requests
            if r.method == "POST" and r.path.endswith("/callback")]


def bot_messages(env, channel) -> list:
    return [m for m in channel.history() if m.author.id == env.bot.user.id]


def full_reply(result) -> str:
    return "".join([result.response.content] + [f.content for f in result.followups])


def buttons_under(message) -> list[tuple[str, str]]:
    """(label, custom_id) of each button under a message (a discord.Message or simcord's response)."""
    rows = message.components
    if isinstance(message, discord.Message):
        rows = [c.to_dict() for c in rows]
    return [(c["label"], c["custom_id"]) for c in walk_components(rows) if c["type"] == 2]


def reply_id(message) -> int:
    """The stored reply that a message's buttons name; it must have exactly Continuar and Otra."""
    (continuar, otra) = buttons_under(message)
    n = int(buttons.command(continuar[1]).argument)
    assert [continuar, otra] == [("Continuar", f"continuar:{n}"), ("Otra", f"otra:{n}")]
    return n


# --- slash commands ------------------------------------------------------------------------------

async def test_slash_commands_are_registered_with_spanish_descriptions(env, channel, alice):
    assert set(alice.available_commands(channel)) == set(SLASH)
    (synced,) = [r.json for r in env.http_requests if r.method == "PUT" and r.path.endswith("/commands")]
    about = {c["name"]: c for c in synced}
    assert about["cervantes"]["description"] == "Continúa tu frase con la prosa de Don Quijote."
    assert about["temperatura"]["options"][0]["name"] == "valor"
    assert "0,7" in about["temperatura"]["options"][0]["description"]
    assert all(c["description"] and all(o["description"] for o in c["options"]) for c in synced)


async def test_ayuda_lists_the_commands(env, channel, alice):
    result = await alice.slash(channel, "ayuda")
    assert callbacks(env) == [5]  # deferred ("thinking..."), then the response edited
    text = result.response.content
    assert text.startswith("Soy Cervantes")
    assert all(f"/{name}" in text for name in SLASH)


async def test_cervantes_streams_the_seed_then_a_continuation(env, channel, alice):
    result = await alice.slash(channel, "cervantes", semilla="Sancho dijo")
    final = result.response.content
    assert final.startswith("Sancho dijo") and len(final) == len("Sancho dijo") + LENGTH
    edits = edits_of(env)
    assert edits[0] == "Sancho dijo" and edits[-1] == final
    assert len(edits) >= 3  # the seed, some continuation, the full text
    assert all(b.startswith(a) for a, b in zip(edits, edits[1:]))  # a reply only grows
    assert not result.followups


@pytest.mark.parametrize("edit_interval_s", [5.0])
async def test_edits_are_paced_per_channel(env, guild, channel, alice):
    other = guild.create_text_channel("otro")
    seed = "Sancho dijo"
    a = await alice.slash(channel, "cervantes", semilla=seed)
    assert edits_of(env) == [seed, a.response.content]  # the first piece; 5 s later, the full text
    b = await alice.slash(channel, "cervantes", semilla=seed)
    assert edits_of(env)[2:] == [b.response.content]  # still 5 s since this channel's last edit
    c = await alice.slash(other, "cervantes", semilla=seed)
    assert edits_of(env)[3:] == [seed, c.response.content]  # another channel, its own pace
    await env.advance_time(5)
    d = await alice.slash(channel, "cervantes", semilla=seed)
    assert edits_of(env)[5:] == [seed, d.response.content]


async def test_continuar_goes_on_in_the_same_channel(channel, alice):
    first = await alice.slash(channel, "continuar")
    assert first.response.content == messages.NOTHING_TO_CONTINUE
    await alice.slash(channel, "cervantes", semilla="Sancho")
    more = await alice.slash(channel, "continuar")
    assert len(more.response.content) == LENGTH


async def test_a_long_reply_is_split_into_followups(channel, alice):
    await alice.slash(channel, "longitud", n="2100")
    result = await alice.slash(channel, "cervantes", semilla="Sancho dijo")
    parts = [result.response.content] + [f.content for f in result.followups]
    assert len(parts) == 2 and all(0 < len(p) <= MAX_CHARS for p in parts)
    assert len(full_reply(result)) == len("Sancho dijo") + 2100
    assert full_reply(result).startswith("Sancho dijo")
    assert buttons_under(result.response) == [] and reply_id(result.followups[-1])  # under the end


# --- settings ------------------------------------------------------------------------------------

async def test_temperatura_good_and_bad_values(channel, alice):
    good = await alice.slash(channel, "temperatura", valor="0,7")
    assert good.response.content == messages.TEMPERATURE_SET.format(value="0,7")
    bad = await alice.slash(channel, "temperatura", valor="mucha")
    assert bad.response.content == messages.TEMPERATURE_BAD.format(tmin="0,1", tmax="2")
    too_hot = await alice.slash(channel, "temperatura", valor="9")
    assert too_hot.response.content == bad.response.content
    shown = await alice.slash(channel, "temperatura")
    assert shown.response.content == messages.TEMPERATURE_IS.format(value="0,7", tmin="0,1", tmax="2")


async def test_each_channel_keeps_its_own_settings(env, guild, channel, alice):
    other = guild.create_text_channel("otro")
    await alice.slash(channel, "temperatura", valor="0,7")
    await alice.user.slash("temperatura", valor="1,5")  # a DM is a channel of its own

    def is_(value):
        return messages.TEMPERATURE_IS.format(value=value, tmin="0,1", tmax="2")

    assert (await alice.slash(channel, "temperatura")).response.content == is_("0,7")
    assert (await alice.slash(other, "temperatura")).response.content == is_("0,8")  # the default
    assert (await alice.user.slash("temperatura")).response.content == is_("1,5")
    await alice.send(other, "!olvidar")
    assert bot_messages(env, other)[-1].content == messages.NOTHING_TO_FORGET
    await alice.send(channel, "!olvidar")
    assert bot_messages(env, channel)[-1].content == messages.FORGOTTEN


# --- prefix commands -----------------------------------------------------------------------------

async def test_prefix_cervantes_answers_the_message(env, channel, alice):
    asked = await alice.send(channel, "!cervantes Sancho dijo")
    (reply,) = bot_messages(env, channel)
    assert reply.content.startswith("Sancho dijo") and len(reply.content) == len("Sancho dijo") + LENGTH
    assert reply.reference is not None and reply.reference.message_id == asked.id
    await alice.send(channel, "!temperatura mucha")
    bad = messages.TEMPERATURE_BAD.format(tmin="0,1", tmax="2")
    assert bot_messages(env, channel)[-1].content == bad


async def test_prefix_ignores_other_text_and_unknown_commands(env, channel, alice):
    for text in ("cervantes Sancho", "hola !cervantes", "!tocar guitarra", "/cervantes Sancho"):
        await alice.send(channel, text)
    assert bot_messages(env, channel) == []


async def test_messages_from_bots_are_ignored(env, guild, channel):
    robot = guild.add_member(env.create_user("robot", bot=True))
    await robot.send(channel, "!cervantes Sancho dijo")
    assert bot_messages(env, channel) == []


@pytest.mark.parametrize("model_dir", ["chatty"], indirect=True)
async def test_its_own_messages_are_ignored(env, channel, alice):
    await alice.send(channel, "!cervantes !ayuda por favor")
    (reply,) = bot_messages(env, channel)  # a command too, but its own: not answered
    assert reply.content.startswith("!ayuda por favor")


# --- buttons -------------------------------------------------------------------------------------

async def test_every_generated_reply_carries_continuar_and_otra(env, channel, alice):
    slash = await alice.slash(channel, "cervantes", semilla="Sancho dijo")
    more = await alice.slash(channel, "continuar")
    await alice.send(channel, "!cervantes Sancho dijo")
    await alice.send(channel, "!continuar")
    replies = [slash.response, more.response] + bot_messages(env, channel)[-2:]
    assert [len(m.content) for m in replies] == [len("Sancho dijo") + LENGTH, LENGTH] * 2
    assert len({reply_id(m) for m in replies}) == 4  # each names its own reply


async def test_replies_that_are_not_texts_carry_no_buttons(env, channel, alice):
    results = [await alice.slash(channel, name) for name in ("ayuda", "temperatura", "continuar")]
    await alice.send(channel, "!ayuda")
    await alice.send(channel, "!temperatura 0,5")
    shown = [r.response for r in results] + bot_messages(env, channel)[-2:]
    assert shown[2].content == messages.NOTHING_TO_CONTINUE
    assert shown[4].content == messages.TEMPERATURE_SET.format(value="0,5")
    assert all(buttons_under(m) == [] for m in shown)
    writes = [r.json for r in env.http_requests if r.method in ("POST", "PATCH") and isinstance(r.json, dict)]
    assert len(writes) >= 5 and not any(w.get("components") for w in writes)  # never sent, then removed


async def test_a_streamed_reply_shows_its_buttons_with_its_final_text_only(env, channel, alice):
    def writes(since: int) -> list[dict]:  # the posts and edits of message contents
        return [r.json for r in env.http_requests[since:]
                if r.method in ("POST", "PATCH") and isinstance(r.json, dict) and "content" in r.json]

    result = await alice.slash(channel, "cervantes", semilla="Sancho dijo")
    edits = writes(0)
    assert len(edits) >= 3 and edits[-1]["content"] == result.response.content
    assert [bool(e.get("components")) for e in edits] == [False] * (len(edits) - 1) + [True]
    since = len(env.http_requests)
    await alice.send(channel, "!cervantes Sancho dijo")
    posts = writes(since)
    assert len(posts) >= 3 and posts[-1]["content"] == bot_messages(env, channel)[-1].content
    assert [bool(p.get("components")) for p in posts] == [False] * (len(posts) - 1) + [True]


@pytest.mark.parametrize("chat_options", [dict(min_temperature=0.0)])
async def test_continuar_goes_on_from_the_reply_pressed(env, channel, alice):
    await alice.slash(channel, "temperatura", valor="0")  # greedy: a seed always gives the same text
    first = await alice.slash(channel, "cervantes", semilla="Sancho dijo")
    pressed = await alice.click(first.response, label="Continuar")
    went_on = bot_messages(env, channel)[-1]
    assert pressed.acknowledged and went_on.reference.message_id == first.response.id
    assert len(went_on.content) == LENGTH
    assert reply_id(went_on) != reply_id(first.response)
    # the same text once more, then a typed /continuar right after it: what the button wrote
    again = await alice.slash(channel, "cervantes", semilla="Sancho dijo")
    assert again.response.content == first.response.content
    typed = await alice.slash(channel, "continuar")
    assert typed.response.content == went_on.content


async def test_continuar_on_an_older_reply_goes_on_exactly_from_it(env, channel, alice):
    clock = env.bot.adapter.double_taps.clock = Clock()
    await alice.send(channel, "!cervantes Sancho dijo")
    await alice.send(channel, "!continuar")  # goes on from the last reply, with its random stream
    older, typed = bot_messages(env, channel)
    await alice.click(older, label="Continuar")  # no longer the last reply
    went_on = bot_messages(env, channel)[-1]
    assert went_on.reference.message_id == older.id
    assert len(went_on.content) == LENGTH and went_on.content == typed.content
    twice = await alice.click(older, label="Continuar")  # a double tap counts once: no same text twice
    assert twice.response.content == messages.PRESSED_TWICE and len(bot_messages(env, channel)) == 3
    clock.now += 6
    await alice.click(older, label="Continuar")  # later, again: a reply can be continued many times
    assert bot_messages(env, channel)[-1].content == typed.content
    assert len({reply_id(m) for m in bot_messages(env, channel)}) == 4


async def test_continuar_as_a_reply_continues_that_text(env, channel, alice):
    await alice.send(channel, "!cervantes Sancho dijo")
    await alice.send(channel, "!continuar")
    await alice.send(channel, "!cervantes Dulcinea")
    older, typed, last = bot_messages(env, channel)
    await alice.send(channel, "!continuar", reply_to=older)
    went_on = bot_messages(env, channel)[-1]
    assert went_on.content == typed.content  # that text's continuation, not Dulcinea's
    await alice.send(channel, "!continuar")  # not a reply: the last text, as always
    assert bot_messages(env, channel)[-1].content != typed.content


async def test_otra_writes_the_reply_again(env, channel, alice):
    first = await alice.slash(channel, "cervantes", semilla="Sancho dijo")
    await alice.click(first.response, label="Otra")
    again = bot_messages(env, channel)[-1]
    assert again.reference.message_id == first.response.id
    assert again.content.startswith("Sancho dijo") and len(again.content) == len("Sancho dijo") + LENGTH
    assert again.content != first.response.content  # the same seed, new randomness
    assert reply_id(again) != reply_id(first.response)
    # under a continuation, Otra writes the continuation again, from where it began
    await alice.click(again, label="Continuar")
    went_on = bot_messages(env, channel)[-1]
    await alice.click(went_on, label="Otra")
    other = bot_messages(env, channel)[-1]
    assert other.reference.message_id == went_on.id
    assert len(other.content) == LENGTH and other.content != went_on.content and reply_id(other)


async def test_a_press_in_a_direct_message_is_answered_there(env, alice):
    first = await alice.user.slash("cervantes", semilla="Sancho dijo")
    await alice.user.click(first.response, label="Continuar")
    went_on = bot_messages(env, alice.user.dm_channel)[-1]
    assert went_on.reference.message_id == first.response.id
    assert len(went_on.content) == LENGTH and reply_id(went_on) != reply_id(first.response)


def new_client(runtime, config):
    """A new Discord client over `runtime`, for a bot that restarts (its inbox included)."""
    return DiscordAdapter(runtime.commands, config.discord, token="never used by simcord",
                          inbox=runtime.inbox).client


async def test_buttons_work_after_a_restart(config):
    """A new runtime over the same database and a new client: an old message's button still works,
    and writes exactly what it wrote before. simcord keeps Discord's side (its messages and their
    buttons) across env.restart_bot; everything of the bot's is new."""
    env = None
    try:
        async with open_runtime(config) as runtime:
            env = simcord.Env(new_client(runtime, config), settle_timeout=30, shard_count=1)
            await env.start()
            guild = env.create_guild()
            channel, alice = guild.create_text_channel("general"), guild.add_member(env.create_user("alice"))
            await alice.send(channel, "!cervantes Sancho dijo")
            await alice.click(bot_messages(env, channel)[0], label="Continuar")
            await env.bot.adapter.stop()
        old, before = bot_messages(env, channel)
        async with open_runtime(config) as runtime:
            await env.restart_bot(new_client(runtime, config))
            await alice.click(old, label="Continuar")
            after = bot_messages(env, channel)[-1]
            assert after.id != before.id and after.reference.message_id == old.id
            assert len(after.content) == LENGTH and after.content == before.content
            assert reply_id(after) not in (reply_id(old), reply_id(before))
    finally:
        if env is not None:
            await env.shutdown()
    env.raise_errors()


async def test_commands_left_by_a_crash_are_answered_in_their_channel_after_a_restart(config):
    """What a killed bot left in the inbox: a slash command (its interaction token was never stored),
    a prefix command, and a change of settings from a member who could not make it. The restarted bot
    answers them, in order, with channel messages, and the change as it would have then."""
    env = None
    try:
        async with open_runtime(config) as runtime:
            env = simcord.Env(new_client(runtime, config), settle_timeout=30, shard_count=1)
            await env.start()
            guild = env.create_guild()
            managers = guild.create_role("gestores", permissions=discord.Permissions(manage_guild=True))
            channel = guild.create_text_channel("general")
            alice = guild.add_member(env.create_user("alice"), roles=[managers])
            await alice.send(channel, "!longitud 70")
            asked = await alice.send(channel, "!temperatura 1,5")  # answered again below, as if never
            await env.bot.adapter.stop()
        before = len(bot_messages(env, channel))
        key = ChatKey("discord", str(channel.id))
        async with await Storage.open(config.storage.path) as storage:
            await Store(storage).add([
                Entry(key, "cervantes", "Sancho", str(alice.id), time.time() - 3, {"channel_id": channel.id}),
                Entry(key, "temperatura", "", str(alice.id), time.time() - 2,
                      {"channel_id": channel.id, "reply_to": asked.id}),
                # sent before she became a manager: the verdict that came with it holds
                Entry(key, "longitud", "90", str(alice.id), time.time() - 1,
                      {"channel_id": channel.id, "guild_id": guild.id, "admin": False})])
        async with open_runtime(config) as runtime:
            await env.restart_bot(new_client(runtime, config))
            await env.settle()
            written, temperature, refused = bot_messages(env, channel)[before:]
            assert written.content.startswith("Sancho") and len(written.content) == len("Sancho") + 70
            assert written.reference is None and reply_id(written)  # a channel message, with its buttons
            assert "1,5" in temperature.content and temperature.reference.message_id == asked.id
            assert refused.content == messages.ONLY_ADMINS
            assert await runtime.inbox.store.pending("discord", since=0) == []
    finally:
        if env is not None:
            await env.shutdown()
    env.raise_errors()


@pytest.mark.parametrize("storage_options", [dict(replies_per_chat=1)])
async def test_a_forgotten_reply_button_says_so(env, channel, alice):
    await alice.send(channel, "!cervantes Sancho dijo")
    await alice.send(channel, "!cervantes Sancho dijo")  # the chat keeps only this one
    older, last = bot_messages(env, channel)
    for label in ("Continuar", "Otra"):
        await alice.click(older, label=label)
        answer = bot_messages(env, channel)[-1]
        assert answer.content == messages.REPLY_FORGOTTEN and answer.reference.message_id == older.id
        assert buttons_under(answer) == []
    await alice.click(last, label="Continuar")
    assert len(bot_messages(env, channel)[-1].content) == LENGTH


async def test_a_press_counts_against_the_member_who_pressed(env, guild, channel, alice):
    bob = guild.add_member(env.create_user("bob"))
    env.bot.adapter.commands.quota.users.per_minute = 1
    await alice.send(channel, "!cervantes Sancho dijo")  # alice's one command this minute
    reply = bot_messages(env, channel)[-1]
    await bob.click(reply, label="Continuar")  # bob's: goes ahead
    await bob.click(reply, label="Otra")  # bob's second: refused
    contents = [m.content for m in bot_messages(env, channel)]
    assert len(contents) == 3 and len(contents[1]) == LENGTH
    assert contents[2] == messages.RATE_LIMITED.format(seconds=60)


async def test_presses_are_ignored_while_closing(env, channel, alice):
    await alice.send(channel, "!cervantes Sancho dijo")
    (reply,) = bot_messages(env, channel)
    env.bot.adapter._closing = True  # what stop() sets while the last replies are finished
    pressed = await alice.click(reply, label="Continuar")
    assert not pressed.acknowledged and bot_messages(env, channel) == [reply]


# --- mentions ------------------------------------------------------------------------------------

@pytest.mark.parametrize("model_dir", ["chatty"], indirect=True)
async def test_a_seed_with_mentions_pings_nobody(env, guild, channel, alice):
    bob = guild.add_member(env.create_user("bob"))
    seed = f"@everyone @here <@{bob.id}> dijo"
    result = await alice.slash(channel, "cervantes", semilla=seed)
    await alice.send(channel, f"!cervantes {seed}")
    replies = [result.response.message, bot_messages(env, channel)[-1]]
    await alice.click(replies[0], label="Otra")
    replies.append(bot_messages(env, channel)[-1])
    assert len({m.id for m in replies}) == 3
    for reply in replies:
        assert reply.content.startswith(seed)  # the text is there, as plain text
        assert not reply.mention_everyone  # the bot may mention everyone here: it chose not to
    # and no one at all: every post and edit carried allowed_mentions "none" (no users, roles, replied)
    sent = [r.json for r in env.http_requests
            if r.method in ("POST", "PATCH") and "content" in (r.json or {})]
    assert len(sent) > 4 and all(r["allowed_mentions"] == {"parse": []} for r in sent)


# --- Discord failing ------------------------------------------------------------------------------

async def test_a_failed_send_is_logged_not_retried_and_the_bot_goes_on(env, channel, alice, caplog):
    env.inject_error("POST", "/channels/*/messages", status=403, code=50013)
    await alice.send(channel, "!cervantes Sancho dijo")
    assert bot_messages(env, channel) == []
    assert "Discord send failed" in caplog.text
    await alice.send(channel, "!ayuda")
    assert [m.content[:13] for m in bot_messages(env, channel)] == ["Soy Cervantes"]
    posts = [r for r in env.http_requests if r.method == "POST" and r.path.endswith("/messages")]
    assert len(posts) == 2  # one try for each command: never a second copy of a reply


async def test_a_failed_edit_is_made_good_by_the_next(env, channel, alice):
    env.inject_error("PATCH", "/webhooks/*/messages/@original", status=404, code=10008, times=2)
    result = await alice.slash(channel, "cervantes", semilla="Sancho dijo")
    assert len(result.response.content) == len("Sancho dijo") + LENGTH
    assert not result.followups and callbacks(env) == [5]


async def test_an_interaction_that_cannot_be_deferred_gets_no_reply(env, channel, alice):
    env.inject_error("POST", "/interactions/*/callback", status=404, code=10062)  # came too late
    result = await alice.slash(channel, "ayuda")
    assert result.response is None and edits_of(env) == []
    assert (await alice.slash(channel, "ayuda")).response.content.startswith("Soy Cervantes")


async def test_stop_closes_the_client(env):
    await env.bot.adapter.stop()
    assert env.bot.is_closed()


# --- syncing -------------------------------------------------------------------------------------

@pytest.mark.parametrize("discord_options", [dict(guilds=[1234567890123456789])])
async def test_commands_sync_to_the_configured_guilds_only(env):
    puts = [r.path for r in env.http_requests if r.method == "PUT"]
    assert len(puts) == 1 and puts[0].endswith("/guilds/1234567890123456789/commands")


# --- splitting -----------------------------------------------------------------------------------

def test_split_cuts_at_spaces_and_keeps_earlier_cuts():
    text = ("palabra " * 600).strip()  # 4799 characters
    parts = split(text)
    assert "".join(parts) == text and all(len(p) <= MAX_CHARS for p in parts)
    assert all(p.endswith(" ") for p in parts[:-1])
    assert split(text + " y más")[:-1] == parts[:-1]
    assert split("x" * 4500) == ["x" * 2000, "x" * 2000, "x" * 500]


async def test_a_reply_past_the_interaction_token_lifetime_goes_on_in_the_channel(env, channel, alice, monkeypatch):
    from bot.discord import adapter as discord_adapter

    monkeypatch.setattr(discord_adapter, "TOKEN_LIFETIME_S", 0.0)  # as if it had waited 15 minutes in a queue
    await alice.slash(channel, "cervantes", semilla="Sancho dijo")
    (reply,) = [m for m in bot_messages(env, channel) if m.content]  # beside the deferred "thinking" one
    assert reply.content.startswith("Sancho dijo") and len(reply.content) == len("Sancho dijo") + LENGTH
    assert edits_of(env) == []  # nothing sent with the expired token


async def test_one_member_cannot_use_up_a_channel_quota(env, guild, channel, alice):
    bob = guild.add_member(env.create_user("bob"))
    env.bot.adapter.commands.quota.users.per_minute = 2
    for _ in range(3):
        await alice.send(channel, "!ayuda")
    await bob.send(channel, "!ayuda")
    contents = [m.content for m in bot_messages(env, channel)]
    assert [c[:8] for c in contents] == ["Soy Cerv", "Soy Cerv", "Despacio", "Soy Cerv"]


# --- servers run by those who manage them -----------------------------------------------------------

def last_said(env, channel) -> str:
    return bot_messages(env, channel)[-1].content


async def test_settings_are_for_those_who_manage_the_server_or_the_channel(env, guild, channel, alice, bob):
    (synced,) = [r.json for r in env.http_requests if r.method == "PUT" and r.path.endswith("/commands")]
    manage_server = discord.Permissions(manage_guild=True).value
    shown_to = {c["name"]: c.get("default_member_permissions") for c in synced}
    assert {name: None if p is None else int(p) for name, p in shown_to.items()} == {
        name: manage_server if name in SETTINGS else None for name in SLASH}
    # installable by servers (0) and users (1); usable in servers (0), the bot's DM (1), group DMs (2)
    assert all(sorted(c["integration_types"]) == [0, 1] and sorted(c["contexts"]) == [0, 1, 2] for c in synced)
    assert set(bob.available_commands(channel)) == set(SLASH) - set(SETTINGS)  # the picker hides them
    assert set(alice.available_commands(channel)) == set(SLASH)

    for text in ("!temperatura 1,5", "!olvidar", "!ajustes todos"):
        await bob.send(channel, text)
        assert "administradores" in last_said(env, channel), text
    await bob.send(channel, "!temperatura")
    assert last_said(env, channel) == messages.TEMPERATURE_IS.format(value=DEFAULT_TEMPERATURE, tmin="0,1", tmax="2")
    await alice.send(channel, "!temperatura 1,5")
    assert last_said(env, channel) == messages.TEMPERATURE_SET.format(value="1,5")

    # Manage Channels in one channel: that channel's settings, no other's
    carol = guild.add_member(env.create_user("carol"))
    hers = guild.create_text_channel("de-carol", overwrites={carol: discord.PermissionOverwrite(manage_channels=True)})
    await carol.send(hers, f"!longitud {LENGTH}")
    assert last_said(env, hers) == messages.LENGTH_SET.format(value=LENGTH)
    await carol.send(channel, f"!longitud {LENGTH}")
    assert "administradores" in last_said(env, channel)

    # an owner who shows /temperatura to bob under Integrations: the check when it runs still holds
    (command,) = [c for c in await env.bot.tree.fetch_commands() if c.name == "temperatura"]
    guild.set_command_permissions(command, {bob: True})
    assert "administradores" in (await bob.slash(channel, "temperatura", valor="1")).response.content
    # what lets everyone is /ajustes todos, from those who manage the server
    assert (await alice.slash(channel, "ajustes", quien="todos")).response.content == messages.EVERYONE_CHANGES
    await bob.send(channel, "!temperatura 1")
    assert last_said(env, channel) == messages.TEMPERATURE_SET.format(value="1")


async def test_a_member_has_one_limit_across_the_channels_and_threads_of_a_server(env, guild, channel, bob):
    env.bot.adapter.commands.quota.users.per_minute = 2
    other = guild.create_text_channel("otro")
    env.backend.create_thread(channel.id, "hilo", bob.id)  # simcord's backend: a thread bob opened
    (thread,) = channel.threads
    for place in (channel, other, thread, thread):
        await bob.send(place, "!ayuda")
    assert [len(bot_messages(env, c)) for c in (channel, other, thread)] == [1, 1, 1]
    assert last_said(env, thread) == messages.RATE_LIMITED.format(seconds=60)  # where he asked, once


@pytest.fixture
def user_installed(env, monkeypatch):
    """A server where the bot is not a member, used through the app its member installed (a user
    install). simcord puts the bot in every server and knows no user installs: the bot's client
    forgets this server (GUILD_DELETE, as when a bot leaves one), and each interaction says that the
    user installed the app (authorizing_integration_owners {"1": user id}, as Discord's do)."""
    from simcord import interactions

    server = env.create_guild("Sin el bot")
    rey = server.add_member(env.create_user("rey"), roles=[
        server.create_role("gestores", permissions=discord.Permissions(manage_guild=True))])
    env.backend.emit("GUILD_DELETE", {"id": str(server.id)})
    made = interactions.base_payload

    def by_the_user(backend, **fields):
        record, payload = made(backend, **fields)
        payload["authorizing_integration_owners"] = {"1": str(fields["user_id"])}
        return record, payload

    monkeypatch.setattr(interactions, "base_payload", by_the_user)
    return server, rey


async def test_a_user_installed_app_writes_where_the_bot_is_not_a_member(env, user_installed):
    server, rey = user_installed
    channel = server.create_text_channel("general")
    assert env.bot.get_guild(server.id) is None
    written = await rey.slash(channel, "cervantes", semilla="Sancho dijo")
    assert written.response.content.startswith("Sancho dijo")
    assert len(written.response.content) == len("Sancho dijo") + LENGTH
    went_on = await rey.click(written.response, label="Continuar")  # the button works there too
    assert len(went_on.response.content) == LENGTH and reply_id(went_on.response) != reply_id(written.response)
    # its settings are the server's, which has not added the bot: even its manager is told so
    refused = await rey.slash(channel, "temperatura", valor="1,5")
    assert refused.response.content == messages.NOT_INSTALLED
    assert (await rey.slash(channel, "temperatura")).response.content == messages.TEMPERATURE_IS.format(
        value=DEFAULT_TEMPERATURE, tmin="0,1", tmax="2")
    # everything went through the interactions: the bot never posted in a channel it is not in
    assert not [r for r in env.http_requests if r.method == "POST" and r.path == f"/channels/{channel.id}/messages"]


async def test_one_person_has_one_limit_wherever_the_bot_is_not_a_member(env, user_installed):
    server, rey = user_installed
    env.bot.adapter.commands.quota.users.per_minute = 2
    channels = [server.create_text_channel(name) for name in ("uno", "dos", "tres")]
    answers = [(await rey.slash(c, "ayuda")).response.content for c in channels]
    assert [a[:8] for a in answers] == ["Soy Cerv", "Soy Cerv", "Despacio"]


async def test_a_group_dm_shares_the_persons_one_limit_and_has_no_admins(env, user_installed, monkeypatch):
    """A private channel (a group DM, or a DM between users) where the app was used by its user:
    simcord has no group DMs, so the user's DM with the bot stands in for one (context 2)."""
    from simcord import interactions

    server, rey = user_installed
    env.bot.adapter.commands.quota.users.per_minute = 3
    made = interactions.base_payload  # already the user-installed one

    def in_a_private_channel(backend, **fields):
        record, payload = made(backend, **fields)
        if fields["guild_id"] is None:
            payload["context"] = 2
        return record, payload

    monkeypatch.setattr(interactions, "base_payload", in_a_private_channel)
    friend = env.create_user("amigo")
    # no admins in a group DM: whoever is there may change its settings
    assert (await friend.slash("temperatura", valor="1,5")).response.content == \
        messages.TEMPERATURE_SET.format(value="1,5")
    # one person, one limit in every place without the bot: a server of theirs and their group DMs
    assert (await rey.slash(server.create_text_channel("uno"), "ayuda")).response.content.startswith("Soy")
    assert (await rey.user.slash("ayuda")).response.content.startswith("Soy")
    assert (await rey.user.slash("ayuda")).response.content.startswith("Soy")
    assert (await rey.user.slash("ayuda")).response.content.startswith("Despacio")


async def test_a_reply_whose_end_past_2000_is_only_whitespace_ends_with_its_buttons(env, channel, alice):
    """Character 2000 and all after it blank: no empty last message (Discord refuses those); the
    reply's last real message carries its buttons, and the channel's next command is answered."""
    import recorder
    from bot.discord.adapter import MessageOutput

    words = ("En un lugar de la Mancha, de cuyo nombre no quiero acordarme " * 40)[:1999]
    assert not words[-1].isspace()
    text = words + " \n "  # character 2000 is the space
    written = recorder.written(text)
    command = await alice.send(channel, "una frase de alice")
    await MessageOutput(command, env.bot.adapter.pace).stream(written)
    await env.settle()
    (reply,) = bot_messages(env, channel)
    assert reply.content == words + " " and reply_id(reply) == 7
    await alice.send(channel, "!ayuda")
    assert bot_messages(env, channel)[-1].content.startswith("Soy Cervantes")


def test_split_never_makes_a_blank_part():
    assert split("a" * 2000 + " \n ") == ["a" * 2000]
    assert split("a" * 1999 + " " * 10 + "b") == ["a" * 1999 + " ", " " * 9 + "b"]


async def test_a_stop_under_load_keeps_its_budget_and_counts_the_commands_it_cut(config, caplog):
    """Ten channels each ask for 10,000 characters, written one at a time, and the bot is stopped:
    it is done within what serve gives the adapters, and each command has its request line, the
    ones cut short counted as `stopping` (before, a 10 s grace alone overran the 7 s). How many
    finish within the 5 s grace depends on the machine's speed: 100,000 characters one at a time
    take this 2-core machine 10 s or more (2,500 each let six of ten finish at a quick moment)."""
    import asyncio
    import logging
    import time

    from bot.process import serve
    from recorder import Recorder

    caplog.set_level(logging.INFO, "cervantes.requests")
    config = dataclasses.replace(config, generation=dataclasses.replace(config.generation, max_batch=1),
                                 chat=dataclasses.replace(config.chat, length=10_000))
    async with open_runtime(config) as runtime:
        adapter = DiscordAdapter(runtime.commands, config.discord, token="never used")
        runs = [asyncio.create_task(adapter._run(
                    Entry(ChatKey("discord", str(7000 + i)), "cervantes", "Sancho dijo", None, time.time()),
                    Recorder(), None))
                for i in range(10)]
        await asyncio.sleep(1.0)
        began = time.monotonic()
        await asyncio.wait_for(adapter.stop(), 60)
        took = time.monotonic() - began
        await asyncio.gather(*runs, return_exceptions=True)
    lines = [r.fields for r in caplog.records if r.name == "cervantes.requests"]
    assert took <= serve.STOP_BUDGET_S, f"the stop took {took:.1f} s"
    assert len(lines) == 10 and all(f["outcome"] in ("ok", "stopping") for f in lines), lines
    assert sum(f["outcome"] == "stopping" for f in lines) >= 1, lines


async def test_a_bot_stopped_before_it_logged_in_closes_without_an_error(config, caplog):
    """serve stops an adapter whose login failed (a bad token) or never came: its close must not
    leave an error behind (discord.py's sharded client could not close before login)."""
    import gc
    import logging

    caplog.set_level(logging.WARNING)
    async with open_runtime(config) as runtime:
        adapter = DiscordAdapter(runtime.commands, config.discord, token="never used")
        await adapter.stop()
        gc.collect()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING and "discord" in r.name + r.getMessage()] == []
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


# --- shards ---------------------------------------------------------------------------------------
# simcord routes each gateway event to the shard Discord would ((guild_id >> 22) % shard_count, and
# everything without a guild, DMs included, to shard 0). It does not model Discord's shard
# recommendation (GET /gateway/bot, for shard_count = 0), IDENTIFY's rate limit between shards, nor
# a shard's session being resumed elsewhere.

@pytest.mark.parametrize("discord_options", [{"shard_count": 2}])
async def test_a_dm_arrives_on_shard_0_and_is_answered(env):
    assert sorted(env.bot.shards) == [0, 1]
    bob = env.create_user("bob")
    await bob.send_dm("!temperatura 0,5")
    (answer,) = [m for m in bob.dm_channel.history() if m.author.id == env.bot.user.id]
    assert answer.content == messages.TEMPERATURE_SET.format(value="0,5")
    assert env.bot.adapter.shards == {0: True, 1: True}


@pytest.mark.parametrize("discord_options", [{"shard_count": 2, "shard_ids": [1]}])
async def test_a_process_runs_only_its_shards_and_health_names_each(env, tmp_path):
    """Shard 1 of 2 here: the servers of shard 1 are answered, those of shard 0 are another
    process's, and so are DMs."""
    channels = {}
    for shard in (1, 0):
        guild = env.create_guild(shard_id=shard)
        channels[shard] = guild.create_text_channel("general")
        await guild.add_member(env.create_user(f"u{shard}")).send(channels[shard], "!temperatura 0,5")
    assert [len(bot_messages(env, channels[shard])) for shard in (0, 1)] == [0, 1]
    bob = env.create_user("bob")
    await bob.send_dm("!temperatura 0,5")
    assert not [m for m in bob.dm_channel.history() if m.author.id == env.bot.user.id]

    from bot.process import health, status

    def line() -> str:
        path = tmp_path / "status.json"
        report = {"updated_at": time.time(), "model": {"id": "m", "loaded": True},
                  "worker": {"alive": True, "progress_at": time.time()},
                  "adapters": {"discord": status.adapter_state(env.bot.adapter)}}
        status.write(path, report)
        try:
            return health.check(path).line()
        finally:
            path.unlink()

    assert line().endswith("discord connected (shard 1 connected)")
    await env.bot.shards[1].disconnect()
    assert line() == "FAIL: discord DISCONNECTED (shard 1 DISCONNECTED)"
