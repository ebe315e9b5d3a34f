"""The telegram-test-api emulator (launch.js here) as a child process on a free local port.

Used by tests/test_telegram.py and benchmarks/telegram_load.py. Needs Node.js and
`npm ci --prefix tests/telegram_emulator` (make install-test does it).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Iterator

HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def missing() -> str | None:
    """Why the emulator cannot run here, or None when it can."""
    if shutil.which("node") is None:
        return "Node.js is not installed: the Telegram emulator cannot run"
    if not (HERE / "node_modules" / "telegram-test-api").is_dir():
        return "telegram-test-api is not installed: run `npm ci --prefix tests/telegram_emulator`"
    return None


@contextlib.contextmanager
def running(username: str) -> Iterator[str]:
    """The emulator listening on 127.0.0.1, as bot `username`; its base URL. Stopped on the way out."""
    if reason := missing():
        raise RuntimeError(reason)
    port = free_port()
    process = subprocess.Popen(
        ["node", "launch.js", "--host", "127.0.0.1", "--port", str(port), "--username", username],
        cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = process.stdout.readline()  # launch.js prints "listening on ..." once it accepts requests
        if "listening" not in line:
            rest = process.stdout.read() if process.poll() is not None else ""
            raise RuntimeError(f"the emulator did not start: {line}{rest}")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
