"""bot.chat.ratelimit: the sliding minute, and the entries it keeps."""

from __future__ import annotations

import pytest

from bot.chat.ratelimit import RateLimiter
from conftest import Clock


def test_at_most_n_a_sliding_minute():
    clock = Clock()
    limiter = RateLimiter(2, clock=clock)
    assert limiter.allow("a") == 0 and limiter.allow("a") == 0
    clock.now += 10
    assert limiter.allow("a") == pytest.approx(50.0)  # until the first one is a minute old
    assert limiter.allow("b") == 0  # chats are counted apart
    clock.now += 50
    assert limiter.allow("a") == 0


def test_no_limit_keeps_nothing():
    limiter = RateLimiter(0)
    assert all(limiter.allow(i) == 0 for i in range(1000))
    assert len(limiter) == 0


def test_idle_chats_leave_no_entries_behind():
    clock = Clock()
    limiter = RateLimiter(3, clock=clock)
    for chat in range(100_000):
        assert limiter.allow(chat) == 0
    assert len(limiter) == 100_000
    clock.now += 61
    assert limiter.allow("newcomer") == 0
    assert len(limiter) == 1


def test_dropping_idle_entries_keeps_the_limit_of_busy_chats():
    clock = Clock()
    limiter = RateLimiter(2, clock=clock)
    limiter.allow("idle")
    clock.now += 30
    limiter.allow("busy")
    limiter.allow("busy")
    clock.now += 31  # a sweep is due: "idle" is 61 s quiet, "busy" 31 s
    assert limiter.allow("busy") == pytest.approx(29.0)  # still refused after the sweep
    assert len(limiter) == 1
    clock.now += 29
    assert limiter.allow("busy") == 0
