"""The kept lists of admins: at most 10 minutes, dropped on a change, one request for many questions.

A small stand-in for the Bot API answers here, so that the clock can run 10 minutes at once; the
same rules meet the emulator in tests/bot_telegram/test_telegram_groups.py.
"""

from __future__ import annotations

import asyncio

import pytest
from telegram import ChatMember, ChatMemberAdministrator, ChatMemberMember, ChatMemberOwner, User
from telegram.error import NetworkError

from bot.chat.members import AdminsUnknown
from bot.telegram.admins import TTL_S, Admins
from conftest import Clock

GROUP = -100123


def person(user_id: int) -> User:
    return User(user_id, "Alonso", is_bot=False)


def admin(user_id: int) -> ChatMember:
    flags = dict.fromkeys(("can_be_edited", "is_anonymous", "can_manage_chat", "can_delete_messages",
                           "can_manage_video_chats", "can_restrict_members", "can_promote_members",
                           "can_change_info", "can_invite_users", "can_post_stories", "can_edit_stories",
                           "can_delete_stories"), False)
    return ChatMemberAdministrator(person(user_id), **flags)


class BotAPI:
    """getChatAdministrators and getChatMember over a dict of statuses, counting the questions."""

    def __init__(self):
        self.admins: dict[int, ChatMember] = {1: ChatMemberOwner(person(1), is_anonymous=False)}
        self.asked = 0
        self.down = False

    async def get_chat_administrators(self, chat_id):
        self.asked += 1
        await asyncio.sleep(0.01)
        if self.down:
            raise NetworkError("Bad Gateway")
        return tuple(self.admins.values())

    async def get_chat_member(self, chat_id, user_id):
        return self.admins.get(user_id) or ChatMemberMember(person(user_id))


async def test_a_list_is_kept_ten_minutes_and_asked_once_for_many_questions():
    api, clock = BotAPI(), Clock()
    admins = Admins(api, clock=clock)
    answers = await asyncio.gather(*(admins.is_admin(GROUP, user) for user in (1, 1, 2, 1)))
    assert answers == [True, True, False, True] and api.asked == 1  # the creator counts
    del api.admins[1]  # no update says so: the kept list stands...
    clock.now += TTL_S - 1
    assert await admins.is_admin(GROUP, 1) and api.asked == 1
    clock.now += 1  # ...for 10 minutes at most
    assert not await admins.is_admin(GROUP, 1) and api.asked == 2


async def test_a_change_of_members_drops_the_list_at_once():
    api = BotAPI()
    admins = Admins(api, clock=Clock())
    api.admins[2] = admin(2)
    assert await admins.is_admin(GROUP, 2)
    del api.admins[2]
    admins.forget(GROUP)  # a chat_member update
    assert not await admins.is_admin(GROUP, 2) and api.asked == 2


async def test_someone_promoted_without_an_update_counts_at_once():
    api = BotAPI()
    admins = Admins(api, clock=Clock())
    assert not await admins.is_admin(GROUP, 2)
    api.admins[2] = admin(2)  # the bot is no admin: no chat_member update comes
    assert await admins.is_admin(GROUP, 2)


async def test_telegram_unreachable_is_admins_unknown_and_asked_again_next_time():
    api = BotAPI()
    admins = Admins(api, clock=Clock())
    api.down = True
    with pytest.raises(AdminsUnknown):
        await admins.is_admin(GROUP, 1)
    api.down = False
    assert await admins.is_admin(GROUP, 1) and api.asked == 2
