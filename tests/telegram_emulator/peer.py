"""The users' side of the telegram-test-api emulator, and the bot as `cervantes serve` runs it.

Shared by the Telegram tests (tests/test_telegram.py, tests/test_telegram_outbox.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import contextlib
import json
import time

import httpx
import pytest

from bot.process.runtime import open_runtime
from bot.telegram.adapter import TelegramAdapter
from config import ChatSection, Config, GenerationSection, ModelSection, StorageSection, TelegramSection

LENGTH = 60  # characters each /cervantes writes in the tests
BOT_ID = 6660001  # the bot's user id in the emulator (launch.js)
GROUP_ANONYMOUS_BOT = 1087968824  # Telegram's sender of an anonymous admin's messages


def bot_config(emulator: str, model_dir, tmp_path, chat: ChatSection, **telegram) -> Config:
    """The bot as the Telegram tests run it: the tiny model, a fresh database, the emulator."""
    return dataclasses.replace(
        Config(),
        model=ModelSection(path=str(model_dir), device="cpu"),
        storage=StorageSection(path=str(tmp_path / "cervantes.db")),
        generation=GenerationSection(chunk_steps=10),
        chat=chat,
        telegram=TelegramSection(base_url=f"{emulator}/bot", **telegram))


class Peer:
    """The users' side of the emulator, for one bot token: write to the bot, read what it did."""

    def __init__(self, url: str, token: str):
        self.url = url
        self.token = token
        self.http = httpx.AsyncClient(base_url=url, timeout=10)

    async def say(self, text: str, chat_id: int = 1001, chat_type: str = "private", user_id: int = 501,
                  topic: int | None = None, first_name: str = "Alonso") -> None:
        """A user writes to the bot; `topic`: in that topic of a forum supergroup."""
        where = {"message_thread_id": topic, "is_topic_message": True} if topic else {}
        await self._message(chat_id, chat_type, user_id, text=text, first_name=first_name, **where)

    async def answer(self, text: str, message: dict, chat_id: int = 1001, chat_type: str = "private",
                     user_id: int = 501) -> None:
        """A user writes `text` as a reply to one of the bot's messages (as `messages` gives it):
        the update carries that message, its keyboard included, as Telegram's does."""
        markup = {"inline_keyboard": [[{"text": label, "callback_data": data} for label, data in message["buttons"]]]}
        replied = {"message_id": message["message_id"], "date": int(time.time()), "text": message["text"],
                   "chat": {"id": chat_id, "type": chat_type},
                   "from": {"id": BOT_ID, "is_bot": True, "first_name": "Cervantes"},
                   **({"reply_markup": markup} if message["buttons"] else {})}
        await self._message(chat_id, chat_type, user_id, text=text, reply_to_message=replied)

    async def say_anonymously(self, text: str, chat_id: int, chat_type: str = "supergroup") -> None:
        """An anonymous admin writes: Telegram shows the group as the sender (sender_chat) and gives
        GroupAnonymousBot as `from`."""
        group = {"id": chat_id, "type": chat_type, "title": "Tertulia"}
        message = {"botToken": self.token, "date": int(time.time()), "chat": group, "sender_chat": group,
                   "from": {"id": GROUP_ANONYMOUS_BOT, "is_bot": True, "first_name": "Group",
                            "username": "GroupAnonymousBot"}, "text": text}
        (await self.http.post("/sendMessage", json=message)).raise_for_status()

    async def set_member(self, chat_id: int, user_id: int, status: str, chat_type: str = "supergroup") -> None:
        """Someone's status in a group changes (creator, administrator, member, left, kicked): a
        chat_member update, if the bot is an admin there (my_chat_member, for the bot itself)."""
        answer = await self.http.post("/setMember", json={"token": self.token, "chat_id": chat_id, "user_id": user_id,
                                                          "status": status, "chat_type": chat_type})
        answer.raise_for_status()

    async def menu(self, scope: str = "default") -> list[str]:
        """The commands the bot's menu shows in a scope (default, all_group_chats, all_chat_administrators)."""
        answer = await self.http.post(f"/bot{self.token}/getMyCommands", json={"scope": {"type": scope}})
        return [c["command"] for c in answer.json()["result"]]

    async def upgrade(self, group: int, supergroup: int, user_id: int = 501) -> None:
        """The group becomes a supergroup: Telegram's service message in each of the two chats."""
        await self._message(group, "group", user_id, migrate_to_chat_id=supergroup)
        await self._message(supergroup, "supergroup", user_id, migrate_from_chat_id=group)

    async def _message(self, chat_id: int, chat_type: str, user_id: int, first_name: str = "Alonso",
                       **fields) -> None:
        chat = {"id": chat_id, "type": chat_type}
        chat.update({"title": "Tertulia"} if chat_type != "private" else {"first_name": first_name})
        message = {"botToken": self.token, "date": int(time.time()), "chat": chat,
                   "from": {"id": user_id, "is_bot": False, "first_name": first_name}, **fields}
        (await self.http.post("/sendMessage", json=message)).raise_for_status()

    async def replies(self, chat_id: int) -> list[str]:
        """The bot's messages in a chat, oldest first, each as it reads now (after its edits)."""
        return [m["text"] for m in await self.messages(chat_id)]

    async def messages(self, chat_id: int) -> list[dict]:
        """The bot's messages in a chat, oldest first, as they are now: message_id, text, buttons
        (a list of (label, callback_data)), and reply_to (the message answered, from the request)."""
        answer = await self.http.post("/getUpdatesHistory", json={"token": self.token})
        sent = [u for u in answer.json()["result"]  # the users' updates have no chat_id (or no message)
                if "chat_id" in u.get("message", {}) and str(u["message"]["chat_id"]) == str(chat_id)]
        out = []
        for u in sorted(sent, key=lambda u: u["messageId"]):
            markup = u["message"].get("reply_markup") or {}
            answering = u["message"].get("reply_parameters")
            answering = json.loads(answering) if isinstance(answering, str) else answering
            out.append({"message_id": u["messageId"], "text": u["message"]["text"],
                        "buttons": [(b["text"], b.get("callback_data")) for row in markup.get("inline_keyboard", [])
                                    for b in row],
                        "reply_to": int(answering["message_id"]) if answering else None})
        return out

    async def press(self, chat_id: int, message_id: int, label: str, user_id: int = 501) -> str:
        """A user taps the button `label` under one of the bot's messages; the callback query's id."""
        message = next(m for m in await self.messages(chat_id) if m["message_id"] == message_id)
        data = dict(message["buttons"])[label]
        answer = await self.http.post("/press", json={"token": self.token, "chat_id": chat_id,
                                                      "message_id": message_id, "data": data, "user_id": user_id})
        answer.raise_for_status()
        return answer.json()["result"]

    async def press_answers(self) -> dict:
        """Callback query id -> {"at": ms, "answered": {"at": ms, "text": ...} or None}."""
        answer = await self.http.post("/pressAnswers", json={"token": self.token})
        return answer.json()["result"]

    async def calls(self, method: str, chat_id: int | None = None) -> list[dict]:
        """The bot's calls of one Bot API method, oldest first: {"params": {...}, "at": ms}."""
        answer = await self.http.post("/calls", json={"token": self.token})
        return [c for c in answer.json()["result"] if c["method"] == method
                and (chat_id is None or str(c["params"].get("chat_id")) == str(chat_id))]

    async def fail_next(self, method: str, **error) -> None:
        (await self.http.post("/failNext", json={"token": self.token, "method": method, **error})).raise_for_status()

    async def wait_for(self, chat_id: int, done, timeout: float = 30.0) -> list[str]:
        """The chat's replies once `done(replies)` holds; fails after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            replies = await self.replies(chat_id)
            if done(replies):
                return replies
            if time.monotonic() > deadline:
                pytest.fail(f"chat {chat_id} never got the expected replies; it has {replies!r}")
            await asyncio.sleep(0.1)

    async def reply_to(self, text: str, chat_id: int = 1001, **kwargs) -> str:
        """Say `text` and return the first new reply it gets (for a reply sent whole)."""
        before = len(await self.replies(chat_id))
        await self.say(text, chat_id, **kwargs)
        replies = await self.wait_for(chat_id, lambda r: len(r) > before)
        return replies[before]

    async def continuation(self, text: str, seed: str, chat_id: int = 1001, **kwargs) -> list[str]:
        """Say a /cervantes `text` and wait for its reply to be complete: the seed and LENGTH more."""
        before = len(await self.replies(chat_id))
        await self.say(text, chat_id, **kwargs)
        replies = await self.wait_for(chat_id, lambda r: len(r) > before and len(r[before]) >= len(seed) + LENGTH)
        return replies[before:]


    async def flood(self, on: bool = True) -> None:
        """Flood-limit mode for this bot (see launch.js): Telegram's limits enforced with 429s."""
        (await self.http.post("/flood", json={"token": self.token, "on": on})).raise_for_status()

    async def hold(self, on: bool = True) -> None:
        """While on, the bot's requests that write to a chat wait unanswered (see launch.js); off lets
        them through, but those of a bot killed meanwhile never arrive."""
        (await self.http.post("/hold", json={"token": self.token, "on": on})).raise_for_status()

    async def unconfirmed(self) -> list[int]:
        """The update_ids Telegram still holds for the bot: no getUpdates has confirmed them yet."""
        return (await self.http.post("/unconfirmed", json={"token": self.token})).json()["result"]

    async def flood_storm(self, chat_id: int, seconds: int, times: int) -> None:
        (await self.http.post("/floodStorm", json={"token": self.token, "chat_id": chat_id,
                                                   "seconds": seconds, "times": times})).raise_for_status()

    async def flood_stats(self) -> dict:
        answer = await self.http.post("/floodStats", json={"token": self.token})
        return answer.json()["result"]

    async def inline_query(self, query: str, user_id: int = 501, chat_type: str = "private") -> str:
        """A user types `@bot query` in a chat (inline mode); the inline query's id."""
        answer = await self.http.post("/inlineQuery", json={"token": self.token, "query": query,
                                                            "user_id": user_id, "chat_type": chat_type})
        answer.raise_for_status()
        return answer.json()["result"]

    async def inline_answers(self) -> dict:
        """Inline query id -> {"query", "user_id", "at": ms, "answered": {"at": ms, "results": [...],
        "button", "cache_time", "is_personal"} or None}."""
        answer = await self.http.post("/inlineAnswers", json={"token": self.token})
        return answer.json()["result"]

    async def inline_answer(self, query_id: str, timeout: float = 15.0) -> dict:
        """The answer to an inline query once it arrives; fails after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not (answered := (await self.inline_answers())[query_id]["answered"]):
            if time.monotonic() > deadline:
                pytest.fail(f"inline query {query_id} was never answered")
            await asyncio.sleep(0.05)
        return answered

    async def inline(self, query: str, user_id: int = 501, chat_type: str = "private") -> dict:
        """A user types `@bot query` and waits for what the list shows: the answer."""
        return await self.inline_answer(await self.inline_query(query, user_id, chat_type))


@contextlib.asynccontextmanager
async def running_bot(config: Config, token: str):
    """The bot as `cervantes serve` runs it: runtime first, then the adapter; stopped in reverse."""
    async with open_runtime(config) as runtime:
        adapter = TelegramAdapter(runtime.commands, config.telegram, token, inbox=runtime.inbox)
        await adapter.start()
        try:
            yield adapter
        finally:
            await adapter.stop()
