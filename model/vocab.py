"""Characters to ids and back. Id 0 is the unknown character, as in the notebook's StringLookup."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

UNK = "[UNK]"
UNK_ID = 0


class Vocab:
    def __init__(self, chars: list[str]):
        if len(set(chars)) != len(chars):
            raise ValueError("vocabulary characters must be distinct")
        self.chars = list(chars)  # index i + 1 is the id of chars[i]
        self._ids = {c: i + 1 for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> "Vocab":
        return cls(sorted(set(text)))

    def __len__(self) -> int:
        return len(self.chars) + 1  # + the unknown id

    def __contains__(self, char: str) -> bool:
        return char in self._ids

    def id_of(self, char: str) -> int:
        return self._ids.get(char, UNK_ID)

    def encode(self, text: str) -> np.ndarray:
        """ids: [len(text)] int32; unknown characters become UNK_ID."""
        return np.fromiter((self._ids.get(c, UNK_ID) for c in text), dtype=np.int32, count=len(text))

    def decode(self, ids) -> str:
        """Unknown ids decode to nothing: the sampler never emits them, and a user never sees [UNK]."""
        chars = self.chars
        return "".join(chars[i - 1] for i in np.asarray(ids).reshape(-1).tolist() if 0 < i <= len(chars))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(
            json.dumps({"unknown": UNK, "unknown_id": UNK_ID, "chars": self.chars}, ensure_ascii=False, indent=1),
            encoding="utf-8",
        )

    @classmethod
    def load(cls, path: str | Path) -> "Vocab":
        return cls(json.loads(Path(path).read_text(encoding="utf-8"))["chars"])
