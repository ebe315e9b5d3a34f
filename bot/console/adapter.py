"""The console adapter: commands line by line from standard input, replies on standard output.

Typed or piped, it is the same bot: the same commands, the same database, so settings and
/continuar survive a restart. A line that is not a command is taken as a seed for /cervantes.
Each generated reply ends with its number and what the buttons of a chat do with it:
"[3] /continuar 3 · /otra 3".
"""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO

from bot.chat.buttons import LABELS
from bot.chat.commands import ChatKey, Commands, Written
from bot.chat.parsing import Command, parse

WELCOME = "Cervantes en la consola. Escribe /ayuda para ver los comandos; Ctrl-D para salir."


class ConsoleOutput:
    def __init__(self, stream: TextIO):
        self.out = stream

    async def send(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    async def stream(self, pieces: Written) -> None:
        async for piece in pieces:
            print(piece, end="", file=self.out, flush=True)
        print(file=self.out, flush=True)
        if pieces.reply_id is not None:  # the console's buttons
            n = pieces.reply_id
            print(f"[{n}] " + " · ".join(f"/{action} {n}" for action in LABELS), file=self.out, flush=True)


async def run(commands: Commands, chat_id: str = "local", stdin: TextIO = sys.stdin,
              stdout: TextIO = sys.stdout) -> None:
    chat = ChatKey("console", chat_id)
    out = ConsoleOutput(stdout)
    if stdin.isatty():
        print(WELCOME, file=stdout, flush=True)
    while True:
        line = await asyncio.to_thread(stdin.readline)
        if not line:  # end of input
            return
        if not line.strip():
            continue
        command = parse(line) or Command("cervantes", line.strip())
        await commands.run(chat, command, out)
