"""A per-chat limit on commands: at most N in any sliding minute.

Only the chats heard from in the last minute or two hold an entry: a sweep, at most once a minute,
drops every entry whose newest request is a minute old (100,000 chats that went quiet leave
nothing behind, and the sweep costs one pass over the entries a minute).
"""

from __future__ import annotations

import time
from collections import deque

WINDOW_S = 60.0


class RateLimiter:
    def __init__(self, per_minute: int, clock=time.monotonic):
        self.per_minute = per_minute
        self.clock = clock
        self._seen: dict[object, deque[float]] = {}  # key -> times of its requests in the window
        self._swept = clock()

    def allow(self, key) -> float:
        """0 when the request may go ahead (and it is counted), else seconds until it may."""
        if self.per_minute <= 0:
            return 0.0
        now = self.clock()
        if now - self._swept >= WINDOW_S:
            self._sweep(now)
        seen = self._seen.setdefault(key, deque())
        while seen and now - seen[0] >= WINDOW_S:
            seen.popleft()
        if len(seen) >= self.per_minute:
            return WINDOW_S - (now - seen[0])
        seen.append(now)
        return 0.0

    def _sweep(self, now: float) -> None:
        """Drop every key with no request in the last minute: O(keys), once a minute at most."""
        self._seen = {key: seen for key, seen in self._seen.items() if seen and now - seen[-1] < WINDOW_S}
        self._swept = now

    def __len__(self) -> int:
        """Keys held now: those heard from since the sweep before last."""
        return len(self._seen)
