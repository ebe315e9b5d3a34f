"""Bot tokens: from the environment only, or from a file an environment variable names (Docker secrets)."""

from __future__ import annotations

import os
from pathlib import Path


def token(name: str, environ=os.environ) -> str | None:
    """$NAME, else the contents of the file $NAME_FILE, else None. Never logged, never stored."""
    value = environ.get(name, "").strip()
    if value:
        return value
    file = environ.get(f"{name}_FILE", "").strip()
    if file:
        value = Path(file).read_text(encoding="utf-8").strip()
        return value or None
    return None
