"""Who may change a group's settings, and one member limit across a group, as users meet them:
the commands over a tiny model and a real SQLite file, members described as an adapter would."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest

from bot.chat import messages
from bot.chat.commands import ChatKey, Commands
from bot.chat.members import AdminsUnknown, Member
from bot.chat.parsing import format_number, parse
from config import ChatSection
from service.generation import GenerationService
from storage import Storage
from recorder import Recorder, member, say

GROUP = ChatKey("telegram", "-100123")
SETTINGS = ChatSection(rate_limit_per_minute=0, user_rate_limit_per_minute=0, length=40, min_length=10)
ANA = member("ana")  # a member
REY = member("rey", admin=True)  # an admin of the same group
TEMPERATURE_IS = messages.TEMPERATURE_IS.format(value="{}", tmin="0,1", tmax="2")
DEFAULT_TEMPERATURE = format_number(ChatSection().temperature)  # as /temperatura shows it


@contextlib.asynccontextmanager
async def bot(tiny_sampler, tmp_path, chat=SETTINGS):
    async with GenerationService(tiny_sampler) as service, await Storage.open(tmp_path / "c.db") as storage:
        yield Commands(service, storage, chat, "tiny-1")


async def test_in_a_group_only_admins_change_settings_and_forget(tiny_sampler, tmp_path):
    async with bot(tiny_sampler, tmp_path) as c:
        for text in ("/temperatura 1,5", "/longitud 500", "/olvidar", "/ajustes todos"):
            assert "administradores" in await say(c, text, GROUP, ANA), text
        assert await say(c, "/temperatura", GROUP, ANA) == TEMPERATURE_IS.format(DEFAULT_TEMPERATURE)  # unchanged
        assert await say(c, "/temperatura 1,5", GROUP, REY) == messages.TEMPERATURE_SET.format(value="1,5")
        # everyone still sees the settings, writes and continues
        assert await say(c, "/temperatura", GROUP, ANA) == TEMPERATURE_IS.format("1,5")
        out = Recorder()
        await c.run(GROUP, parse("/cervantes Sancho"), out, ANA)
        assert out.last.startswith("Sancho") and len(out.last) == len("Sancho") + 40
        await c.run(GROUP, parse(f"/continuar {out.reply_ids[0]}"), out, ANA)  # her Continuar button
        await c.run(GROUP, parse(f"/otra {out.reply_ids[0]}"), out, ANA)  # and Otra
        assert [len(r) for r in out.replies[1:]] == [40, len("Sancho") + 40]
        assert "administradores" in await say(c, "/olvidar", GROUP, ANA)
        assert await c.storage.get_continuation(GROUP) is not None  # the group's story is kept
        assert await say(c, "/olvidar", GROUP, REY) == messages.FORGOTTEN


async def test_in_a_private_chat_the_user_changes_everything(tiny_sampler, tmp_path):
    async with bot(tiny_sampler, tmp_path) as c:
        private = ChatKey("telegram", "501")
        assert await say(c, "/temperatura 1,5", private) == messages.TEMPERATURE_SET.format(value="1,5")
        assert await say(c, "/ajustes todos", private) == messages.AJUSTES_PRIVATE
        assert await say(c, "/olvidar", private) == messages.FORGOTTEN


async def test_everyone_may_change_them_when_the_config_says_so(tiny_sampler, tmp_path):
    async with bot(tiny_sampler, tmp_path, dataclasses.replace(SETTINGS, group_settings="everyone")) as c:
        assert await say(c, "/ajustes", GROUP, ANA) == messages.EVERYONE_CHANGES
        assert await say(c, "/longitud 50", GROUP, ANA) == messages.LENGTH_SET.format(value=50)
        assert "administradores" in await say(c, "/ajustes admins", GROUP, ANA)  # the choice stays the admins'
        assert await say(c, "/ajustes admins", GROUP, REY) == messages.ADMINS_CHANGE
        assert "administradores" in await say(c, "/longitud 60", GROUP, ANA)


async def test_ajustes_opens_one_chat_to_everyone_until_olvidar(tiny_sampler, tmp_path):
    other = ChatKey("telegram", "-100999")
    async with bot(tiny_sampler, tmp_path) as c:
        assert await say(c, "/ajustes", GROUP, ANA) == messages.ADMINS_CHANGE
        assert await say(c, "/ajustes cualquiera", GROUP, REY) == messages.AJUSTES_BAD
        assert await say(c, "/ajustes todos", GROUP, REY) == messages.EVERYONE_CHANGES
        assert await say(c, "/temperatura 1,5", GROUP, ANA) == messages.TEMPERATURE_SET.format(value="1,5")
        assert "administradores" in await say(c, "/temperatura 1,5", other, ANA)  # that chat only
        assert await say(c, "/olvidar", GROUP, ANA) == messages.FORGOTTEN  # everyone: /olvidar too
        assert await say(c, "/ajustes", GROUP, ANA) == messages.ADMINS_CHANGE  # forgotten with the rest
        assert "administradores" in await say(c, "/temperatura 1,5", GROUP, ANA)


async def test_a_refusal_counts_against_the_quota_like_any_command(tiny_sampler, tmp_path):
    async with bot(tiny_sampler, tmp_path, dataclasses.replace(SETTINGS, user_rate_limit_per_minute=2)) as c:
        out = Recorder()
        for text in ("/temperatura 1", "/temperatura 1", "/temperatura", "/ayuda"):
            await c.run(GROUP, parse(text), out, ANA)
    assert "administradores" in out.replies[0] and "administradores" in out.replies[1]
    assert out.replies[2].startswith("Despacio") and len(out.replies) == 3


async def test_when_the_platform_cannot_say_who_the_admins_are_nothing_changes(tiny_sampler, tmp_path):
    async def unknown() -> bool:
        raise AdminsUnknown("Telegram unreachable")

    async with bot(tiny_sampler, tmp_path) as c:
        assert await say(c, "/temperatura 1,5", GROUP, Member("ana", "g", unknown)) == messages.ADMINS_UNKNOWN
        assert await say(c, "/temperatura", GROUP, ANA) == TEMPERATURE_IS.format(DEFAULT_TEMPERATURE)


async def test_a_server_that_has_not_added_the_bot_cannot_change_its_settings(tiny_sampler, tmp_path):
    stranger = member("rey", admin=True, installed=False)  # a Discord user install
    async with bot(tiny_sampler, tmp_path) as c:
        assert await say(c, "/temperatura 1,5", GROUP, stranger) == messages.NOT_INSTALLED
        assert await say(c, "/temperatura", GROUP, stranger) == TEMPERATURE_IS.format(DEFAULT_TEMPERATURE)
        assert (await say(c, "/cervantes Sancho", GROUP, stranger)).startswith("Sancho")


@pytest.mark.parametrize("limits", [dict(user_rate_limit_per_minute=3), dict(rate_limit_per_minute=3)])
async def test_one_limit_across_the_topics_of_a_group(tiny_sampler, tmp_path, limits):
    """Ten topics (or threads) are ten chats, but one member, and one group's quota: the fourth
    command is refused wherever it is sent, and the notice goes where it was sent, once."""
    topics = [ChatKey("telegram", f"-100123:{i}") for i in range(10)]
    in_topic = dataclasses.replace(ANA, room=GROUP) if "rate_limit_per_minute" in limits else ANA
    async with bot(tiny_sampler, tmp_path, dataclasses.replace(SETTINGS, **limits)) as c:
        outs = [Recorder() for _ in topics]
        for topic, out in zip(topics, outs):
            await c.run(topic, parse("/ayuda"), out, in_topic)
    assert [len(o.replies) for o in outs] == [1, 1, 1, 1] + [0] * 6
    assert outs[3].last.startswith("Despacio")
