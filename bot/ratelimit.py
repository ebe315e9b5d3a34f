"""A per-chat limit on generations: at most N in any sliding minute."""

from __future__ import annotations

import time
from collections import defaultdict, deque


class RateLimiter:
    def __init__(self, per_minute: int, clock=time.monotonic):
        self.per_minute = per_minute
        self.clock = clock
        self._seen: dict[object, deque[float]] = defaultdict(deque)

    def allow(self, key) -> float:
        """0 when the request may go ahead (and it is counted), else seconds until it may."""
        if self.per_minute <= 0:
            return 0.0
        now = self.clock()
        seen = self._seen[key]
        while seen and now - seen[0] >= 60.0:
            seen.popleft()
        if len(seen) >= self.per_minute:
            return 60.0 - (now - seen[0])
        seen.append(now)
        return 0.0

    def forget(self, key) -> None:
        self._seen.pop(key, None)
