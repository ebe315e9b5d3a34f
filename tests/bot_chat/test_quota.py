"""Command quotas: every command counts, one notice per window, members of a group limited apart."""

from __future__ import annotations

from bot.chat.quota import Quota
from conftest import Clock


def test_over_the_limit_one_notice_then_silence_until_the_window_ends():
    clock = Clock()
    quota = Quota(per_chat=3, per_user=0, clock=clock)
    assert [quota.check("chat").wait_s for _ in range(3)] == [0, 0, 0]
    refused = [quota.check("chat") for _ in range(5)]
    assert all(v.wait_s > 0 for v in refused)
    assert [v.notify for v in refused] == [True, False, False, False, False]  # one "Despacio", then quiet
    assert quota.check("other").wait_s == 0  # another chat is not held up
    clock.now += 60
    assert quota.check("chat").wait_s == 0  # a new window
    for _ in range(2):
        quota.check("chat")
    assert quota.check("chat").notify  # told again, once, in the new window


def test_one_member_cannot_use_up_the_whole_group():
    quota = Quota(per_chat=12, per_user=4, clock=Clock())
    assert all(quota.check("group", user="ana").wait_s == 0 for _ in range(4))
    assert quota.check("group", user="ana").notify  # ana has had her share
    assert quota.check("group", user="ana").wait_s and not quota.check("group", user="ana").notify
    assert all(quota.check("group", user=f"m{i}").wait_s == 0 for i in range(8))  # the others still have 8
    assert quota.check("group", user="bea").notify  # and then the group's 12 are spent


def test_zero_means_no_limit():
    quota = Quota(per_chat=0, per_user=0, clock=Clock())
    assert all(quota.check("chat", user="ana").wait_s == 0 for _ in range(500))


def test_a_member_named_across_the_group_has_one_share_in_every_topic():
    """The adapter names a member by (group, user): ten topics or threads are still one share."""
    quota = Quota(per_chat=0, per_user=3, clock=Clock())
    verdicts = [quota.check(f"-100123:{topic}", user=("-100123", "ana")) for topic in range(10)]
    assert [v.wait_s == 0 for v in verdicts] == [True] * 3 + [False] * 7
    assert [v.notify for v in verdicts[3:]] == [True] + [False] * 6  # one notice, wherever it goes
    assert quota.check("-100123:4", user=("-100123", "bea")).wait_s == 0  # another member: her own
    assert quota.check("-100999", user=("-100999", "ana")).wait_s == 0  # another group: its own
