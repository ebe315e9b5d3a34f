"""The two stores behind one interface (_base.Engine): an SQLite file, or a PostgreSQL database."""

from __future__ import annotations

import os

from storage.engines._base import Engine, Tx
from storage.engines.postgres import PostgresEngine, is_url, redact
from storage.engines.sqlite import SQLiteEngine


def engine_for(target: str | os.PathLike, **kwargs) -> Engine:
    """PostgreSQL for a postgresql:// (or postgres://) URL; otherwise the SQLite file at that path."""
    if is_url(str(target)):
        return PostgresEngine(str(target), **kwargs)
    return SQLiteEngine(target, **kwargs)


__all__ = ["Engine", "PostgresEngine", "SQLiteEngine", "Tx", "engine_for", "is_url", "redact"]
