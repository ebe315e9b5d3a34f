"""Groups run by their admins, and quotas that hold across a forum's topics, against the emulator.

The emulator answers getChatAdministrators and getChatMember from the statuses a test sets
(peer.set_member), and sends chat_member updates as the Bot API does: only to a bot that is an
admin of the chat (tests/telegram_emulator/launch.js).
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from bot.chat import messages
from bot.chat.parsing import format_number
from config import ChatSection
from telegram_emulator.peer import BOT_ID, LENGTH, bot_config, running_bot

GROUP = -1002001
ANA, REY, DUENA = 501, 601, 701  # a member, an admin, the group's creator
SET = messages.TEMPERATURE_SET.format(value="1,5")
CHAT = ChatSection(length=LENGTH, min_length=10, rate_limit_per_minute=0, user_rate_limit_per_minute=0)


@pytest.fixture
def chat_section():
    return CHAT


@pytest.fixture
async def bot(emulator, tiny_model_dir, tmp_path, chat_section, token):
    async with running_bot(bot_config(emulator, tiny_model_dir, tmp_path, chat_section), token) as adapter:
        yield adapter


async def in_group(peer, text: str, user: int, chat_id: int = GROUP) -> str:
    return await peer.reply_to(text, chat_id, chat_type="supergroup", user_id=user)


async def settled() -> None:
    """Time for an update the emulator has just made to reach the bot and be handled."""
    await asyncio.sleep(1.0)


async def test_members_see_writing_commands_and_admins_the_settings_in_their_menus(bot, peer):
    assert await peer.menu("all_group_chats") == ["cervantes", "continuar", "ayuda"]
    assert await peer.menu("all_chat_administrators") == [
        "cervantes", "continuar", "temperatura", "longitud", "olvidar", "ajustes", "ayuda"]
    assert await peer.menu() == ["cervantes", "continuar", "temperatura", "longitud", "olvidar", "ayuda"]


async def test_a_member_cannot_change_the_settings_an_admin_and_the_creator_can(bot, peer):
    await peer.set_member(GROUP, REY, "administrator")
    await peer.set_member(GROUP, DUENA, "creator")
    refused = await in_group(peer, "/temperatura 1,5", ANA)
    assert "administradores" in refused
    assert "administradores" in await in_group(peer, "/olvidar", ANA)
    assert await in_group(peer, "/temperatura", ANA) == messages.TEMPERATURE_IS.format(
        value=format_number(ChatSection().temperature), tmin="0,1", tmax="2")  # she may see them
    assert await in_group(peer, "/temperatura 1,5", REY) == SET
    assert await in_group(peer, f"/longitud {LENGTH}", DUENA) == messages.LENGTH_SET.format(value=LENGTH)
    # members still write and press the buttons
    (text,) = await peer.continuation("/cervantes Sancho", "Sancho", GROUP, chat_type="supergroup", user_id=ANA)
    while not (await peer.messages(GROUP))[-1]["buttons"]:
        await asyncio.sleep(0.05)
    before = len(await peer.replies(GROUP))
    await peer.press(GROUP, (await peer.messages(GROUP))[-1]["message_id"], "Continuar", user_id=ANA)
    assert len((await peer.wait_for(GROUP, lambda r: len(r) > before))[-1]) == LENGTH
    # one question to Telegram for all of this: the list is kept
    assert len(await peer.calls("getChatAdministrators", GROUP)) == 1


async def test_an_anonymous_admin_is_an_admin(bot, peer):
    assert "administradores" in await in_group(peer, "/temperatura 1,5", ANA)
    await peer.say_anonymously("/temperatura 1,5", GROUP)  # the group itself, as the sender
    assert (await peer.wait_for(GROUP, lambda r: len(r) == 2))[1] == SET


async def test_a_promotion_and_a_demotion_count_from_their_update(bot, peer):
    await peer.set_member(GROUP, BOT_ID, "administrator")  # chat_member updates reach admins only
    assert "administradores" in await in_group(peer, "/temperatura 1,5", ANA)
    await peer.set_member(GROUP, ANA, "administrator")
    await settled()
    assert await in_group(peer, "/temperatura 1,5", ANA) == SET
    await peer.set_member(GROUP, ANA, "member")  # within the 10 minutes the list would be kept
    await settled()
    assert "administradores" in await in_group(peer, "/temperatura 1", ANA)
    assert await in_group(peer, "/temperatura", ANA) == messages.TEMPERATURE_IS.format(
        value="1,5", tmin="0,1", tmax="2")


async def test_a_new_admin_counts_at_once_where_no_update_says_so(bot, peer):
    """The bot is no admin here, so Telegram sends it no chat_member update: the kept list is out of
    date, and a user missing from it is asked about (getChatMember)."""
    assert "administradores" in await in_group(peer, "/temperatura 1,5", ANA)
    await peer.set_member(GROUP, ANA, "administrator")
    await settled()
    assert await in_group(peer, "/temperatura 1,5", ANA) == SET
    assert len(await peer.calls("getChatAdministrators", GROUP)) == 1  # no update dropped the list
    assert [c["params"]["user_id"] for c in await peer.calls("getChatMember", GROUP)] == [str(ANA)]


async def test_ajustes_lets_everyone_change_them_until_olvidar(bot, peer):
    await peer.set_member(GROUP, REY, "administrator")
    assert "administradores" in await in_group(peer, "/ajustes todos", ANA)
    assert await in_group(peer, "/ajustes todos", REY) == messages.EVERYONE_CHANGES
    assert await in_group(peer, "/temperatura 1,5", ANA) == SET
    assert await in_group(peer, "/olvidar", ANA) == messages.FORGOTTEN
    assert await in_group(peer, "/ajustes", ANA) == messages.ADMINS_CHANGE
    assert "administradores" in await in_group(peer, "/temperatura 1,5", ANA)


@pytest.mark.parametrize("chat_section", [dataclasses.replace(CHAT, group_settings="everyone")])
async def test_everyone_changes_them_where_the_config_says_so(bot, peer):
    assert await in_group(peer, "/ajustes", ANA) == messages.EVERYONE_CHANGES
    assert await in_group(peer, "/temperatura 1,5", ANA) == SET


@pytest.mark.parametrize("chat_section", [dataclasses.replace(CHAT, rate_limit_per_minute=3,
                                                              user_rate_limit_per_minute=2)])
async def test_a_member_and_the_group_each_have_one_quota_across_the_forum_topics(bot, peer):
    forum, bea, carmen = -1003001, 502, 503
    for topic, user in ((11, ANA), (12, ANA), (13, ANA), (14, bea), (15, carmen)):
        await peer.say("/ayuda", forum, chat_type="supergroup", user_id=user, topic=topic)
        await peer.wait_for(forum, lambda r, n=len(await peer.replies(forum)): len(r) > n)
    posts = [(p["params"].get("message_thread_id"), p["params"]["text"][:8])
             for p in await peer.calls("sendMessage", forum)]
    assert posts == [("11", "Soy Cerv"), ("12", "Soy Cerv"), ("13", "Despacio"),  # ana's two, in any topic
                     ("14", "Soy Cerv"), ("15", "Despacio")]  # the group's three, all topics together


@pytest.mark.parametrize("chat_section", [dataclasses.replace(CHAT, user_rate_limit_per_minute=2)])
async def test_no_other_key_multiplies_one_persons_limit(emulator, tiny_model_dir, tmp_path, chat_section, token,
                                                        peer):
    """Issue 19, item 3: a press counts against the one who pressed, in every topic of the group;
    inline queries count against the person, from whatever chat they type in."""
    config = bot_config(emulator, tiny_model_dir, tmp_path, chat_section, inline_rate_limit_per_minute=2,
                        inline_length=LENGTH)
    forum = -1003002
    async with running_bot(config, token):
        await peer.continuation("/cervantes Sancho", "Sancho", forum, chat_type="supergroup", user_id=ANA, topic=11)
        while not (await peer.messages(forum))[-1]["buttons"]:
            await asyncio.sleep(0.05)
        await peer.press(forum, (await peer.messages(forum))[-1]["message_id"], "Otra", user_id=ANA)  # her second
        await peer.wait_for(forum, lambda r: len(r) == 2)
        await peer.say("/ayuda", forum, chat_type="supergroup", user_id=ANA, topic=12)  # another topic: no new share
        replies = await peer.wait_for(forum, lambda r: len(r) == 3)
        assert replies[2].startswith("Despacio")

        answers = [await peer.inline("Sancho", user_id=ANA, chat_type=kind) for kind in ("private", "group", "supergroup")]
        assert [len(a["results"]) for a in answers] == [3, 3, 0]  # one person, one inline limit, wherever
