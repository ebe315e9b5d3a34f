"""The training text: where it comes from, how it is read and normalized, how it is split."""

from __future__ import annotations

import hashlib
import os
import tempfile
import unicodedata
import urllib.error
import urllib.request
from pathlib import Path

# The notebook's text, pinned to one revision of the gist so every download is the same bytes.
CORPUS_URL = (
    "https://gist.githubusercontent.com/jsdario/6d6c69398cb0c73111e49f1218960f79/raw/"
    "8d4fc4548d437e2a7203a5aeeace5477f598827d/el_quijote.txt"
)
CORPUS_SHA256 = "a67c1e3fefac58d0d2ee9f7c11d3790d4d0bc772115d5a77b964d733e9c1404d"
CORPUS_FILENAME = "el_quijote.txt"
VALIDATION_FRACTION = 0.1  # the last 10% of the text is held out


class CorpusError(Exception):
    """A corpus that cannot be fetched or read; the message says what to do."""


def cache_dir() -> Path:
    """Where `download-corpus` keeps the text: $CERVANTES_CACHE or ~/.cache/cervantes."""
    env = os.environ.get("CERVANTES_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cervantes"


def default_corpus_path() -> Path:
    return cache_dir() / CORPUS_FILENAME


def download(dest: Path | None = None, url: str = CORPUS_URL, timeout: float = 30.0) -> Path:
    """Fetch the corpus into `dest` atomically: a temporary file in the same folder, then rename."""
    dest = Path(dest) if dest else default_corpus_path()
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".download-", dir=dest.parent)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            while chunk := response.read(1 << 16):
                digest.update(chunk)
                out.write(chunk)
        if url == CORPUS_URL and digest.hexdigest() != CORPUS_SHA256:
            raise CorpusError(
                f"the downloaded text has sha256 {digest.hexdigest()}, expected {CORPUS_SHA256}; "
                "nothing was kept"
            )
        os.replace(tmp_name, dest)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise CorpusError(
            f"could not download the corpus from {url} ({exc}). Without network, pass a local "
            "copy of the text with --corpus PATH."
        ) from exc
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return dest


def resolve(path: str | os.PathLike | None) -> Path:
    """The corpus to use: the given path, else the downloaded copy; a clear error when neither."""
    if path:
        return Path(path)
    cached = default_corpus_path()
    if cached.exists():
        return cached
    raise CorpusError(
        f"no corpus at {cached}. Run `cervantes download-corpus` or pass --corpus PATH."
    )


def normalize(text: str, strip_accents: bool = False) -> str:
    """NFC keeps accents and the ñ; strip_accents reproduces the notebook (NFD, marks dropped)."""
    if strip_accents:
        decomposed = unicodedata.normalize("NFD", text)
        return "".join(c for c in decomposed if unicodedata.category(c) != "Mn")
    return unicodedata.normalize("NFC", text)


def read(path: str | os.PathLike, strip_accents: bool = False) -> str:
    """Read a UTF-8 text file and normalize it; empty, missing or non-UTF-8 files are errors."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise CorpusError(f"{path}: no such file") from exc
    except IsADirectoryError as exc:
        raise CorpusError(f"{path} is a folder, not a text file") from exc
    except OSError as exc:
        raise CorpusError(f"{path}: cannot be read ({exc.strerror})") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorpusError(
            f"{path} is not UTF-8 text (invalid byte at offset {exc.start})"
        ) from exc
    text = normalize(text.lstrip("\ufeff"), strip_accents)
    if not text.strip():
        raise CorpusError(f"{path} is empty")
    return text


def split(text: str, validation_fraction: float = VALIDATION_FRACTION) -> tuple[str, str]:
    """(training, held-out): the held-out part is the last `validation_fraction` of the text."""
    cut = int(len(text) * (1.0 - validation_fraction))
    return text[:cut], text[cut:]


def sha256_of(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
