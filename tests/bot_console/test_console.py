"""The console adapter as a newcomer uses it: `cervantes chat` with commands piped in."""

from __future__ import annotations

import os
import subprocess
import sys

from bot.chat import messages


def chat(model_dir, db, lines: list[str], chat_id: str = "local") -> str:
    env = {**os.environ, "CERVANTES_MODEL_PATH": str(model_dir), "CERVANTES_STORAGE_PATH": str(db),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "chat", "--chat-id", chat_id], input="\n".join(lines) + "\n",
        capture_output=True, text=True, env=env, timeout=120, cwd=db.parent)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_piped_commands_get_replies_and_survive_a_restart(tiny_model_dir, tmp_path):
    db = tmp_path / "cervantes.db"
    out = chat(tiny_model_dir, db, ["/temperatura 0,7", "/longitud 50", "/cervantes Sancho dijo", "/ayuda"])
    first = messages.TEMPERATURE_SET.format(value="0,7") + "\n" + messages.LENGTH_SET.format(value=50)
    assert out.startswith(first + "\nSancho dijo")
    reply = out[len(first) + 1:].split("\n" + messages.HELP.splitlines()[0])[0]
    reply, number = reply.rsplit("\n", 1)
    assert len(reply) == len("Sancho dijo") + 50  # the seed and 50 new characters
    assert number == "[1] /continuar 1 · /otra 1"  # what the buttons of a chat would do with it
    assert "/continuar" in out

    # a new process on the same database: the settings and the continuation are still there
    out = chat(tiny_model_dir, db, ["/temperatura", "/continuar"])
    shown, rest = out.split("\n", 1)
    assert "es 0,7." in shown
    assert rest.endswith("\n[2] /continuar 2 · /otra 2\n")
    assert len(rest) == 50 + 1 + len("[2] /continuar 2 · /otra 2\n")
    assert messages.NOTHING_TO_CONTINUE not in rest

    # another chat id is another chat
    assert chat(tiny_model_dir, db, ["/continuar"], chat_id="otro") == messages.NOTHING_TO_CONTINUE + "\n"


def test_continuar_n_goes_on_from_the_nth_reply(tiny_model_dir, tmp_path):
    db = tmp_path / "cervantes.db"
    greedy = ["/longitud 50", "/temperatura 0,1"]
    out = chat(tiny_model_dir, db, greedy + ["/cervantes Sancho", "/continuar", "/cervantes Dulcinea"])
    right_after = out.split("\n[1] /continuar 1 · /otra 1\n")[1].split("\n[2]")[0]
    # another day: reply 1 again, though reply 3 came after it
    out = chat(tiny_model_dir, db, ["/continuar 1"])
    assert out.startswith(right_after + "\n[4] ")
    assert chat(tiny_model_dir, db, ["/continuar 99"]) == messages.REPLY_FORGOTTEN + "\n"


def test_a_plain_line_is_a_seed(tiny_model_dir, tmp_path):
    out = chat(tiny_model_dir, tmp_path / "c.db", ["Sancho Panza"])
    assert out.startswith("Sancho Panza")
