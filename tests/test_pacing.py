"""Pacing on its own: the backlog order, the 429 spread that pauses everything, pauses, and the request's limits."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from bot.notify.pacing import Limits, Pacing, SlidingWindow, backlog_seconds, spread_429

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ANNA, BORIS, CYRIL, GROUP = 501, 502, 503, -100777


@pytest.mark.parametrize(("due", "chat", "seconds"), [
    (1, ANNA, 1), (17, ANNA, 17),  # a private chat: 1/s
    (1, GROUP, 1), (20, GROUP, 20),  # a group: 1/s while its window has room
    (21, GROUP, 61), (30, GROUP, 70), (41, GROUP, 121),  # … the 21st a window after the first
])
def test_a_backlog_takes_as_long_as_its_chats_own_limits_allow(due, chat, seconds):
    """The turnstile's order: how long a chat's due rows take at its own rate (a group's window included)."""
    assert backlog_seconds(due, chat, Limits()) == seconds


def test_429s_for_three_chats_within_two_seconds_pause_everything():
    """Several chats limited at once mean the bot as a whole is over the limit; one chat twice does not."""
    recent, everyone = spread_429([], 10.0, ANNA)
    recent, everyone = spread_429(recent, 10.5, ANNA)
    assert not everyone and len(recent) == 2
    recent, everyone = spread_429(recent, 11.0, BORIS)
    assert not everyone
    recent, everyone = spread_429(recent, 11.9, CYRIL)
    assert everyone
    recent, everyone = spread_429(recent, 20.0, ANNA)  # the earlier ones are out of the span
    assert not everyone and recent == [(20.0, ANNA)]


def test_a_chat_pause_keeps_the_later_end_and_is_forgotten_once_over():
    """A pause never shortens another; an ended pause lets the chat send again and is dropped."""
    pacing = Pacing()
    pacing.pause(ANNA, T0 + timedelta(seconds=30))
    pacing.pause(ANNA, T0 + timedelta(seconds=10))
    assert pacing.paused_until(ANNA, T0) == T0 + timedelta(seconds=30)
    assert not pacing.may_send(ANNA, T0) and pacing.may_send(BORIS, T0)
    assert pacing.pauses_ending_after(T0) == [T0 + timedelta(seconds=30)]
    assert pacing.may_send(ANNA, T0 + timedelta(seconds=30))
    assert pacing.pauses_ending_after(T0) == []


def test_a_rate_limit_pauses_the_chat_and_spread_ones_pause_all():
    """rate_limited pauses its chat; the third chat within the span pauses everyone until the latest end."""
    pacing = Pacing()
    assert not pacing.rate_limited(ANNA, T0 + timedelta(seconds=5), mono=100.0)
    assert not pacing.rate_limited(BORIS, T0 + timedelta(seconds=9), mono=100.5)
    assert not pacing.all_paused(T0) and pacing.may_send(CYRIL, T0)
    assert pacing.rate_limited(CYRIL, T0 + timedelta(seconds=7), mono=101.0)
    assert pacing.global_pause == T0 + timedelta(seconds=7)
    assert pacing.all_paused(T0) and not pacing.may_send(GROUP, T0)
    assert not pacing.all_paused(T0 + timedelta(seconds=7))
    pacing.pause_all(T0 + timedelta(minutes=10))
    assert pacing.all_paused(T0 + timedelta(minutes=9))


def test_each_chat_gets_its_own_limiters():
    """1 message/s in every chat; 20 in any 60 s in a group, one window per group."""
    pacing = Pacing()
    assert pacing.chat_limiter(ANNA) is pacing.chat_limiter(ANNA) is not pacing.chat_limiter(BORIS)
    assert (pacing.chat_limiter(ANNA).max_rate, pacing.chat_limiter(ANNA).time_period) == (1, 1)
    window = pacing.group_window(GROUP)
    assert window is pacing.group_window(GROUP) and (window.limit, window.period) == (20, 60)


async def test_a_full_group_window_holds_the_next_request_for_its_oldest_entry():
    """The window counts a request from when it was answered; the next one waits for the oldest to leave."""
    now = [0.0]
    window = SlidingWindow(2, 60, clock=lambda: now[0])
    async with window.slot():
        pass
    now[0] = 10.0
    async with window.slot():
        assert window.wait_time() == 50.0  # one under way, one answered at 0: that one must leave first
    assert window.wait_time() == 50.0
    now[0] = 60.0
    assert window.wait_time() == 0.0


async def test_requests_are_held_to_the_in_flight_limit():
    """At most `max_in_flight` requests are under way at once, whatever the chats."""
    pacing = Pacing(Limits(global_per_second=1000, private_per_second=1000), max_in_flight=2)
    busy, peak = 0, 0

    async def one(chat: int) -> None:
        nonlocal busy, peak
        async with pacing.request(chat):
            busy += 1
            peak = max(peak, busy)
            await asyncio.sleep(0.02)
            busy -= 1

    await asyncio.gather(*(one(chat) for chat in range(1, 7)))
    assert peak == 2


async def test_an_urgent_request_goes_ahead_of_waiting_lanes():
    """An admin notice passes the turnstile before lanes already waiting for the global bucket (about 1.5 s)."""
    pacing = Pacing(Limits(global_per_second=2, private_per_second=1000))
    order: list[int] = []

    async def one(chat: int, *, urgent: bool = False) -> None:
        async with pacing.request(chat, urgent=urgent):
            order.append(chat)

    await asyncio.gather(one(11), one(12))  # the bucket's burst: the next token comes in 0.5 s
    lanes = [asyncio.create_task(one(chat)) for chat in (2, 3)]
    await asyncio.sleep(0.1)
    await asyncio.gather(*lanes, one(900, urgent=True))
    assert order == [11, 12, 2, 900, 3]
