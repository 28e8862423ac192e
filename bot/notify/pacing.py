"""Pacing within Telegram's limits: per-chat rate, a group's sliding window, the global limit, 429 pauses."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from aiolimiter import AsyncLimiter

GLOBAL_429_CHATS = 3  # 429s for this many different chats within GLOBAL_429_SPAN seconds pause everything
GLOBAL_429_SPAN = 2.0


@dataclass(frozen=True)
class Limits:
    """Telegram's published guidance (bots FAQ): ~30 messages/s overall, ~1/s per chat, 20/min per group."""

    global_per_second: float = 25
    private_per_second: float = 1
    group_per_minute: float = 20
    group_window_seconds: float = 60  # Telegram counts a group's messages over any 60 s, not in a bucket


def is_group(chat_id: int) -> bool:
    """Groups and channels have negative ids."""
    return chat_id < 0


def backlog_seconds(due: int, chat_id: int, limits: Limits) -> float:
    """How long `due` messages take at the chat's own rate (for a group, its window too): the turnstile serves the
    longest backlog first, so that no chat's backlog is left to the end (critical path first)."""
    per_message = 1 / limits.private_per_second
    if not is_group(chat_id):
        return due * per_message
    per_window = max(1, int(limits.group_per_minute))
    return (due - 1) // per_window * limits.group_window_seconds + ((due - 1) % per_window + 1) * per_message


def spread_429(recent: Sequence[tuple[float, int]], now: float, chat_id: int, *, chats: int = GLOBAL_429_CHATS,
               span: float = GLOBAL_429_SPAN) -> tuple[list[tuple[float, int]], bool]:
    """Record a 429 for `chat_id` at monotonic `now`: the 429s still within `span`, and whether they hit enough
    different chats to mean the bot as a whole is over the limit (then everything pauses)."""
    kept = [(t, c) for t, c in recent if now - t <= span]
    kept.append((now, chat_id))
    return kept, len({c for _, c in kept}) >= chats


class SlidingWindow:
    """At most `limit` requests in any `period` seconds, counted from when each request was answered (the server
    received it no later than that, so no `period` at the server's end holds more). A full window waits for
    its oldest entry to leave; a burst is queued, never rejected. aiolimiter's leaky bucket lets a full burst
    and then a steady drip through — up to twice the limit in the first period."""

    def __init__(self, limit: int, period: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.period, self.clock = max(1, int(limit)), period, clock
        self._done: deque[float] = deque()  # when each request of the last `period` was answered
        self._open = 0  # requests under way (counted as if answered now)

    def wait_time(self) -> float:
        now = self.clock()
        while self._done and self._done[0] <= now - self.period:
            self._done.popleft()
        excess = len(self._done) + self._open - self.limit  # this many + 1 entries must leave first
        if excess < 0:
            return 0.0
        if excess < len(self._done):
            return max(0.001, self._done[excess] + self.period - now)
        return self.period / self.limit  # the window is full of requests under way: look again soon

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        while (wait := self.wait_time()) > 0:  # noqa: ASYNC110 (waits on the clock, not on an event)
            await asyncio.sleep(wait)
        self._open += 1
        try:
            yield
        finally:
            self._open -= 1
            self._done.append(self.clock())


class PriorityTurnstile:
    """Lets waiters through one at a time, the most urgent first. aiolimiter serves waiters first come, first
    served; put in front of the global bucket, this makes the lane with the longest backlog (by its own rate) get
    the next global token, so that no chat's backlog is left to the end (critical path first)."""

    def __init__(self) -> None:
        self._waiting: list[tuple[float, int, asyncio.Future[None]]] = []
        self._busy = False
        self._order = itertools.count()

    @contextlib.asynccontextmanager
    async def turn(self, urgency: float) -> AsyncIterator[None]:
        if self._busy:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiting, (-urgency, next(self._order), future))
            try:
                await future
            except asyncio.CancelledError:
                if future.done() and not future.cancelled():
                    self._hand_over()  # the turn was given to us as we were cancelled: pass it on
                raise
        else:
            self._busy = True
        try:
            yield
        finally:
            self._hand_over()

    def _hand_over(self) -> None:
        while self._waiting:
            _, _, future = heapq.heappop(self._waiting)
            if not future.done():
                future.set_result(None)  # still busy: the turn goes straight to the next waiter
                return
        self._busy = False


@dataclass
class Pacing:
    """Every Telegram request waits here: its chat's bucket (1/s), a group's window (20 in any 60 s), the global
    bucket (served longest backlog first) and a free in-flight slot; 429s and faults pause a chat or everything."""

    limits: Limits = field(default_factory=Limits)
    max_in_flight: int = 16
    global_pause: datetime | None = None  # nothing is sent before this
    _paused: dict[int, datetime] = field(default_factory=dict)  # chat -> nothing sent to it before this
    _recent_429: list[tuple[float, int]] = field(default_factory=list)
    _global: AsyncLimiter | None = None
    _per_chat: dict[int, AsyncLimiter] = field(default_factory=dict)
    _per_group: dict[int, SlidingWindow] = field(default_factory=dict)
    _turnstile: PriorityTurnstile = field(default_factory=PriorityTurnstile)
    _backlog: dict[int, int] = field(default_factory=dict)  # due rows per chat, for the turnstile's order
    _in_flight: asyncio.Semaphore | None = None

    # ── limits ───────────────────────────────────────────────────────────────────────────────────────────────

    @contextlib.asynccontextmanager
    async def request(self, chat_id: int, *, urgent: bool = False) -> AsyncIterator[None]:
        """Around one request: a group's window is held until Telegram answered (the window counts that), then
        the chat's bucket, the global one, and an in-flight slot. A burst is queued, never rejected."""
        window = self.group_window(chat_id) if is_group(chat_id) else None
        async with window.slot() if window is not None else contextlib.nullcontext():
            await self._pace(chat_id, urgent=urgent)
            async with self._slots():
                yield

    async def _pace(self, chat_id: int, *, urgent: bool) -> None:
        await self.chat_limiter(chat_id).acquire()
        if self._global is None:
            self._global = AsyncLimiter(self.limits.global_per_second, 1)
        urgency = float("inf") if urgent else backlog_seconds(self._backlog.get(chat_id, 1), chat_id, self.limits)
        async with self._turnstile.turn(urgency):
            await self._global.acquire()

    def _slots(self) -> asyncio.Semaphore:
        if self._in_flight is None:
            self._in_flight = asyncio.Semaphore(self.max_in_flight)
        return self._in_flight

    def set_backlog(self, chat_id: int, due: int | None) -> None:
        """The chat's due rows (None: it has none left), for the order in which lanes get the global bucket."""
        if due is None:
            self._backlog.pop(chat_id, None)
        else:
            self._backlog[chat_id] = due

    def chat_limiter(self, chat_id: int) -> AsyncLimiter:
        """One message per second in any chat (Telegram: "avoid sending more than one message per second")."""
        limiter = self._per_chat.get(chat_id)
        if limiter is None:
            limiter = self._per_chat[chat_id] = AsyncLimiter(1, 1 / self.limits.private_per_second)
        return limiter

    def group_window(self, chat_id: int) -> SlidingWindow:
        """Groups and channels (negative ids) also get 20 messages in any 60 s (a sliding window, as
        Telegram counts; a bucket let ~40 through in the first minute and drew 429s of 17–22 s)."""
        window = self._per_group.get(chat_id)
        if window is None:
            window = self._per_group[chat_id] = SlidingWindow(int(self.limits.group_per_minute),
                                                              self.limits.group_window_seconds)
        return window

    # ── pauses ───────────────────────────────────────────────────────────────────────────────────────────────

    def pause(self, chat_id: int, until: datetime) -> None:
        """Nothing more to this chat before `until` (a later pause wins)."""
        self._paused[chat_id] = max(until, self._paused.get(chat_id, until))

    def pause_all(self, until: datetime) -> None:
        """Nothing to anyone before `until` (a wrong token or address)."""
        self.global_pause = until

    def rate_limited(self, chat_id: int, until: datetime, *, mono: float | None = None) -> bool:
        """A 429 for this chat: pause it until `until`; True when 429s for several chats at once pause everything."""
        self.pause(chat_id, until)
        self._recent_429, everyone = spread_429(self._recent_429, time.monotonic() if mono is None else mono,
                                                chat_id)
        if everyone:
            self.global_pause = max(until, self.global_pause or until)
        return everyone

    def all_paused(self, now: datetime) -> bool:
        return self.global_pause is not None and self.global_pause > now

    def paused_until(self, chat_id: int, now: datetime) -> datetime | None:
        """When this chat's own pause ends, or None (an ended pause is forgotten)."""
        until = self._paused.get(chat_id)
        if until is not None and until <= now:
            del self._paused[chat_id]
            return None
        return until

    def may_send(self, chat_id: int, now: datetime) -> bool:
        return not self.paused_until(chat_id, now) and not self.all_paused(now)

    def pauses_ending_after(self, now: datetime) -> list[datetime]:
        """The pauses still running: the sender looks again when the first one ends."""
        pauses = [*self._paused.values(), *([self.global_pause] if self.global_pause else [])]
        return [until for until in pauses if until > now]
