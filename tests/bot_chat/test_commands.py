"""The commands as a user meets them: a tiny model, the real service and a real SQLite file."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses

import pytest

from bot.chat import messages
from bot.chat.commands import ChatKey, Commands
from bot.chat.parsing import Command, parse
from config import ChatSection
from service.generation import Busy, GenerationService
from storage import Continuation, Storage
from recorder import Recorder, member, say

DEFAULT_SHOWN = f"es {ChatSection().temperature:g}.".replace(".", ",", 1)  # "es 0,8.": the default temperature

CHAT = ChatKey("telegram", "-100123")
OTHER = ChatKey("telegram", "-100999")
# greedy allowed (temperature 0) so that texts can be compared exactly
SETTINGS = ChatSection(min_temperature=0.0, rate_limit_per_minute=0, length=120, min_length=10)


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "cervantes.db"


@contextlib.asynccontextmanager
async def bot(tiny_sampler, db_path, chat=SETTINGS, model_id="tiny-1", **service_args):
    async with GenerationService(tiny_sampler, **service_args) as service, \
            await Storage.open(db_path) as storage:
        yield Commands(service, storage, chat, model_id)


async def test_cervantes_continues_the_seed(tiny_sampler, db_path):
    async with bot(tiny_sampler, db_path) as c:
        reply = await say(c, "/cervantes Sancho dijo")
    assert reply.startswith("Sancho dijo")
    assert len(reply) == len("Sancho dijo") + SETTINGS.length


async def test_reply_is_streamed_in_pieces(tiny_sampler, db_path):
    async with bot(tiny_sampler, db_path, chunk_steps=4) as c:  # a lone stream: at most 5 chunks, 20 steps, a call
        out = Recorder()
        await c.run(CHAT, parse("/cervantes Sancho"), out)
    assert len(out.streamed[0]) > 5 and out.streamed[0][0] == "Sancho"


async def test_without_seed_the_default_opening(tiny_sampler, db_path):
    async with bot(tiny_sampler, db_path) as c:
        assert (await say(c, "/cervantes")).startswith("En un lugar de la Mancha")


async def test_unknown_characters_are_dropped_and_mentioned(tiny_sampler, db_path):
    async with bot(tiny_sampler, db_path) as c:
        reply = await say(c, "/cervantes Sancho 🐴 dijo")
    assert reply.startswith("Sancho  dijo")
    assert reply.rstrip().endswith(messages.DROPPED.format(chars="🐴"))


@pytest.mark.parametrize("value, shown", [("0,5", "0,5"), ("0.5", "0,5"), ("2", "2"), ("0.1", "0,1")])
async def test_temperature_is_set_and_shown(tiny_sampler, db_path, value, shown):
    async with bot(tiny_sampler, db_path, chat=ChatSection()) as c:
        assert await say(c, f"/temperatura {value}") == messages.TEMPERATURE_SET.format(value=shown)
        assert f"es {shown}." in await say(c, "/temperatura")


@pytest.mark.parametrize("value", ["abc", "-1", "nan", "1e400", "inf", "0,05", "2.5", "0x1", "1/2", "٣"])
async def test_bad_temperature_gets_the_valid_range(tiny_sampler, db_path, value):
    async with bot(tiny_sampler, db_path, chat=ChatSection()) as c:
        assert await say(c, f"/temperatura {value}") == messages.TEMPERATURE_BAD.format(tmin="0,1", tmax="2")
        assert DEFAULT_SHOWN in await say(c, "/temperatura")  # unchanged


async def test_length_is_set_used_and_checked(tiny_sampler, db_path):
    async with bot(tiny_sampler, db_path) as c:
        assert await say(c, "/longitud 60") == messages.LENGTH_SET.format(value=60)
        assert len(await say(c, "/cervantes Sancho")) == len("Sancho") + 60
        for bad in ("5", "100000", "abc", "60.5", ""):
            reply = await say(c, f"/longitud {bad}")
            assert reply == (messages.LENGTH_BAD.format(lmin=10, lmax=1000) if bad else
                             messages.LENGTH_IS.format(value=60, lmin=10, lmax=1000))


@pytest.mark.parametrize("words", ["free", "book"])
async def test_continuar_goes_on_exactly_where_it_stopped(tiny_book_sampler, db_path, words):
    async with bot(tiny_book_sampler, db_path, words=words) as c:
        await say(c, "/temperatura 0")
        await say(c, "/longitud 60")
        first = await say(c, "/cervantes Sancho dijo")
        second = await say(c, "/continuar")
        third = await say(c, "/continuar")
        whole = await c.service.generate("Sancho dijo", temperature=0.0, length=180)
    assert first + second + third == "Sancho dijo" + whole.text


async def test_settings_and_continuation_survive_a_restart(tiny_sampler, db_path):
    async with bot(tiny_sampler, db_path) as c:
        await say(c, "/temperatura 0")
        await say(c, "/longitud 50")
        await say(c, "/cervantes Rocinante")
        stored = await c.storage.get_continuation(tuple(CHAT))
        expected = await c.service.generate(state=stored.state, last_char=stored.last_char,
                                            temperature=0.0, length=50)
    # the same chat after a restart: a new service, a new connection, the same file
    async with bot(tiny_sampler, db_path) as c:
        assert "es 0." in await say(c, "/temperatura")
        assert await say(c, "/continuar") == expected.text


async def written(commands: Commands, text: str, chat: ChatKey = CHAT) -> tuple[str, int]:
    """A generated reply and the id its buttons carry."""
    out = Recorder()
    await commands.run(chat, parse(text), out)
    assert out.reply_ids == [out.reply_ids[-1]] and out.reply_ids[-1] is not None, out.replies
    return out.last, out.reply_ids[-1]


@pytest.mark.parametrize("words", ["free", "book"])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
async def test_continuing_any_earlier_reply_after_a_restart_is_exact(tiny_book_sampler, db_path, temperature,
                                                                     words):
    """Continuar on the oldest of a chat's 50 stored replies gives what /continuar right after it
    gave, greedy or sampled, after a restart; with the book's words too (a reply that stops inside
    a word goes on inside it)."""
    chat = dataclasses.replace(SETTINGS, temperature=temperature, length=30)
    async with bot(tiny_book_sampler, db_path, chat=chat, words=words) as c:
        text, first = await written(c, "/cervantes Sancho dijo")
        right_after = await say(c, "/continuar")  # the uninterrupted text: Sancho's, on and on
        for i in range(48):  # other replies come in between: 50 in all, the first the oldest kept
            await say(c, f"/cervantes {('Dulcinea', 'Rocinante', 'la ínsula')[i % 3]}")
    async with bot(tiny_book_sampler, db_path, chat=chat, words=words) as c:  # a restart: new service, same file
        stream = (await c.storage.get_reply(CHAT, first)).end.random_seed
        later, later_id = await written(c, f"/continuar {first}")
        assert later == right_after
        again, _ = await written(c, f"/continuar {later_id}")  # and on from that one
        whole = await c.service.generate("Sancho dijo", temperature=temperature, length=90, random_seed=stream)
        assert await say(c, f"/continuar {first}") == messages.REPLY_FORGOTTEN  # now 52 came after it
    assert text + later + again == "Sancho dijo" + whole.text
    if words == "book":
        from model.quality import words as words_of

        assert all(w in tiny_book_sampler.lexicon for w in words_of(text + later + again))


async def test_otra_writes_the_same_seed_again_with_new_randomness(tiny_sampler, db_path):
    warm = dataclasses.replace(SETTINGS, temperature=1.0, length=60)
    async with bot(tiny_sampler, db_path, chat=warm) as c:
        text, first = await written(c, "/cervantes Sancho dijo")
        others = {(await written(c, f"/otra {first}"))[0] for _ in range(3)}
        assert all(o.startswith("Sancho dijo") and len(o) == len(text) for o in others)
        assert len(others | {text}) > 1
        # Otra of a continuation writes again from where that continuation began, without the seed
        more, more_id = await written(c, f"/continuar {first}")
        other, _ = await written(c, f"/otra {more_id}")
        assert not other.startswith("Sancho") and len(other) == len(more) and other != more
        # and it takes the chat's current length
        await say(c, "/longitud 20")
        assert len((await written(c, f"/otra {first}"))[0]) == len("Sancho dijo") + 20


async def test_a_reply_past_the_retention_is_forgotten_politely(tiny_sampler, db_path):
    async with GenerationService(tiny_sampler) as service, \
            await Storage.open(db_path, replies_per_chat=2) as storage:
        c = Commands(service, storage, SETTINGS, "tiny-1")
        _, first = await written(c, "/cervantes Sancho")
        await say(c, "/cervantes Dulcinea")
        await say(c, "/cervantes Rocinante")
        assert await say(c, f"/continuar {first}") == messages.REPLY_FORGOTTEN
        assert await say(c, f"/otra {first}") == messages.REPLY_FORGOTTEN
        assert await say(c, f"/continuar {first}", OTHER) == messages.REPLY_FORGOTTEN  # not the chat's
        for bad in ("abc", "0", "-3", "1,5"):
            assert await say(c, f"/continuar {bad}") == messages.CONTINUE_WHICH
        assert await say(c, "/olvidar") == messages.FORGOTTEN
        _, last = await written(c, "/cervantes Quijote")
        await say(c, "/olvidar")
        assert await say(c, f"/continuar {last}") == messages.REPLY_FORGOTTEN  # /olvidar took it too


async def test_chats_never_see_each_other(tiny_sampler, db_path):
    async with bot(tiny_sampler, db_path) as c:
        await say(c, "/temperatura 1,5", CHAT)
        await say(c, "/cervantes Sancho", CHAT)
        assert DEFAULT_SHOWN in await say(c, "/temperatura", OTHER)
        assert await say(c, "/continuar", OTHER) == messages.NOTHING_TO_CONTINUE
        discord_same_id = ChatKey("discord", CHAT.chat_id)
        assert await say(c, "/continuar", discord_same_id) == messages.NOTHING_TO_CONTINUE


async def test_olvidar_forgets_everything_of_the_chat(tiny_sampler, db_path):
    async with bot(tiny_sampler, db_path) as c:
        await say(c, "/temperatura 1,5")
        await say(c, "/cervantes Sancho")
        await say(c, "/temperatura 1", OTHER)
        assert await say(c, "/olvidar") == messages.FORGOTTEN
        assert await say(c, "/continuar") == messages.NOTHING_TO_CONTINUE
        assert DEFAULT_SHOWN in await say(c, "/temperatura")
        assert "es 1." in await say(c, "/temperatura", OTHER)
        assert await say(c, "/olvidar") == messages.NOTHING_TO_FORGET


async def test_continuar_with_nothing_stored(tiny_sampler, db_path):
    async with bot(tiny_sampler, db_path) as c:
        assert await say(c, "/continuar") == messages.NOTHING_TO_CONTINUE


async def test_state_of_another_model_is_not_fed_to_this_one(tiny_sampler, db_path):
    async with bot(tiny_sampler, db_path, model_id="old-model") as c:
        await say(c, "/cervantes Sancho dijo")
    async with bot(tiny_sampler, db_path, model_id="new-model") as c:
        reply = await say(c, "/continuar")
        stored = await c.storage.get_continuation(tuple(CHAT))
    assert reply.startswith(messages.MODEL_CHANGED) or messages.MODEL_CHANGED in reply
    assert stored.model_id == "new-model"
    assert stored.tail.startswith("Sancho dijo") and stored.tail.count("Sancho dijo") == 1  # extended, not repeated


async def test_rate_limit_answers_politely(tiny_sampler, db_path):
    limited = dataclasses.replace(SETTINGS, rate_limit_per_minute=2)
    async with bot(tiny_sampler, db_path, chat=limited) as c:
        await say(c, "/cervantes a")
        await say(c, "/cervantes b")
        assert await say(c, "/cervantes c") in {messages.RATE_LIMITED.format(seconds=s) for s in range(1, 61)}
        assert (await say(c, "/cervantes d", OTHER)).startswith("d")  # other chats are not limited


async def test_busy_queue_answers_try_again(tiny_sampler, db_path, monkeypatch):
    async with bot(tiny_sampler, db_path) as c:
        def full(*args, **kwargs):
            raise Busy("full")

        monkeypatch.setattr(c.service, "stream", full)
        assert await say(c, "/cervantes Sancho") == messages.BUSY


async def test_help_and_unknown_commands(tiny_sampler, db_path):
    async with bot(tiny_sampler, db_path) as c:
        for name in ("/ayuda", "/start"):
            reply = await say(c, name)
            for command in ("/cervantes", "/continuar", "/temperatura", "/longitud", "/olvidar", "/ayuda"):
                assert command in reply
        assert await say(c, "/bailar") == messages.UNKNOWN_COMMAND


async def test_every_command_counts_and_olvidar_does_not_reset_the_limit(tiny_sampler, db_path):
    limited = dataclasses.replace(SETTINGS, rate_limit_per_minute=3)
    async with bot(tiny_sampler, db_path, chat=limited) as c:
        out = Recorder()
        for text in ("/ayuda", "/temperatura 1", "/olvidar", "/cervantes a", "/olvidar", "/ayuda"):
            await c.run(CHAT, parse(text), out)
    assert len(out.replies) == 4  # three answers, one notice, then silence for the rest of the minute
    assert out.replies[3] in {messages.RATE_LIMITED.format(seconds=s) for s in range(1, 61)}


async def test_a_group_member_has_a_share_of_the_group_quota(tiny_sampler, db_path):
    shares = dataclasses.replace(SETTINGS, rate_limit_per_minute=10, user_rate_limit_per_minute=2)
    async with bot(tiny_sampler, db_path, chat=shares) as c:
        ana, bea = Recorder(), Recorder()
        for _ in range(3):
            await c.run(CHAT, parse("/ayuda"), ana, member("ana"))
        await c.run(CHAT, parse("/ayuda"), bea, member("bea"))
    assert ana.replies[2].startswith("Despacio") and not bea.last.startswith("Despacio")


async def _together(c: Commands, *texts: str, length: int = 120) -> list[Recorder]:
    """Commands of one chat sent at once, in this order; each one's replies."""
    outs = [Recorder() for _ in texts]
    await asyncio.gather(*(c.run(CHAT, parse(t), o) for t, o in zip(texts, outs)))
    return outs


async def test_olvidar_sent_while_a_reply_is_written_forgets_that_reply_too(tiny_sampler, db_path):
    async with bot(tiny_sampler, db_path, chunk_steps=5) as c:
        written, forgot = await _together(c, "/cervantes Sancho", "/olvidar")
        assert written.last.startswith("Sancho") and forgot.last == messages.FORGOTTEN
        assert await c.storage.get_continuation(CHAT) is None
        assert await say(c, "/continuar") == messages.NOTHING_TO_CONTINUE
        # the other order: forgotten first, then written and kept
        forgot, written = await _together(c, "/olvidar", "/cervantes Sancho")
        assert forgot.last == messages.NOTHING_TO_FORGET
        assert (await c.storage.get_continuation(CHAT)).tail.startswith("Sancho")


async def test_continuar_right_after_cervantes_continues_that_new_text(tiny_sampler, db_path):
    greedy = dataclasses.replace(SETTINGS, temperature=0.0)
    async with bot(tiny_sampler, db_path, chat=greedy, chunk_steps=5) as c:
        await say(c, "/cervantes Dulcinea")
        first, then = await _together(c, "/cervantes Sancho", "/continuar")
        whole = await say(c, "/cervantes Sancho", OTHER) + await say(c, "/continuar", OTHER)
        assert first.last + then.last == whole  # /continuar went on from Sancho's text, not Dulcinea's
        assert (await c.storage.get_continuation(CHAT)).tail.endswith(then.last)
        # the other order: /continuar goes on from what was there, then the new text starts afresh
        then, first = await _together(c, "/continuar", "/cervantes Quijote")
        assert first.last.startswith("Quijote")
        assert (await c.storage.get_continuation(CHAT)).tail.startswith("Quijote")


@pytest.mark.parametrize("damage", [dict(state_size=7), dict(last_char=""), dict(last_char="☃")])
async def test_a_damaged_stored_state_is_read_again_from_its_text(tiny_sampler, db_path, damage, caplog):
    import numpy as np

    async with bot(tiny_sampler, db_path) as c:
        await say(c, "/cervantes Sancho")
        good = await c.storage.get_continuation(CHAT)
        state = np.zeros(damage["state_size"], np.float32) if "state_size" in damage else good.state
        await c.storage.save_continuation(CHAT, dataclasses.replace(
            good, state=state, last_char=damage.get("last_char", good.last_char)))
        reply = await say(c, "/continuar")
        assert len(reply) == SETTINGS.length and "unusable" in caplog.text  # a normal answer, and a log line
        assert (await say(c, "/continuar")) != messages.NOTHING_TO_CONTINUE  # the row is good again


async def test_continuar_at_a_temperature_goes_on_with_the_random_stream_of_the_text(tiny_sampler, db_path):
    warm = dataclasses.replace(SETTINGS, temperature=1.0, length=40)
    async with bot(tiny_sampler, db_path, chat=warm) as c:
        first = await say(c, "/cervantes Sancho")
        stored = await c.storage.get_continuation(CHAT)
        then = await say(c, "/continuar")
        whole = await c.service.generate("Sancho", temperature=1.0, length=80, random_seed=stored.random_seed)
    assert (first + then)[len("Sancho"):] == whole.text
