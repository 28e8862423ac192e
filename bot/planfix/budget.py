"""The one Planfix request budget: ≤ requests_per_second, a daily allowance, priorities, and the 0007 pause.

Every request the client sends first takes a slot here (DESIGN.md rule 3). Slots are handed out one at a time by
an `aiolimiter.AsyncLimiter` of capacity 1 (no bursts: consecutive requests start at least 1/rps apart), and
when a slot frees up it goes to the waiting request of the highest priority, so an interactive command never
waits behind queued background requests — at most behind the one slot already granted. What Planfix counts is
when requests *arrive*, and a request can spend a while on the way (a new TLS connection): so a slot is also
held until the previous request has finished (at most HOLD_CAP seconds) and the next one starts a full period
after that. Two requests then never arrive within one period, however uneven the network.

The daily allowance (`daily_request_budget`) is counted locally and corrected by `X-RateLimit-Remaining` when
Planfix sends it: requests used = the larger of our own count and (daily − header + our requests since the
header last changed), because the header lags (refreshed about every 10 minutes) and other integrations may
share the account. A header that rises means Planfix reset its counter: the count starts again. Background
requests stop while fewer than `reserve` requests are left, so commands keep working to the end of the day:
until our day ends when our own count says so, or for one header refresh period when the header says so
(then one background request looks at the header again). Error 0007 pauses background requests until the daily counter resets. The
reset time is UNCONFIRMED (PLANFIX-API.md §8): we assume the next midnight in the API user's zone, then probe
with one background request at a time, backing off from 15 minutes to 2 hours while Planfix still says 0007.
But 0007 is not always the day (§16): what exceeding the shared 1 request/s returns is undocumented. So when a
fresh `X-RateLimit-Remaining` (on the 0007 answer itself, or within the last refresh period) says more than the
reserve is left, a 0007 is a short-term limit: background requests pause for 1 minute, doubling to 16 while it
repeats, and today's count is kept; only an exhausted (or unknown) day pauses until the reset.

Commands cannot starve the feed: while a background request waits, at most `interactive_run` slots in a row go
to commands (default 2), then one goes to the best background waiter — so background work keeps at least a third
of the rate whatever people click (each person's own allowance is in bot/chat/allowance.py).

The budget knows nothing of SQLite: `snapshot()`/`restore()` let the watcher keep requests-used-today in the
state file across restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime, time, timedelta, tzinfo
from enum import IntEnum
from typing import Any

import structlog
from aiolimiter import AsyncLimiter

from bot.clock import utc_now
from bot.planfix.errors import PlanfixLimitError

log = structlog.get_logger(__name__)

# Spacing slack: consecutive requests leave 2% more than 1/rps between them, so network jitter between our send
# and Planfix's arrival never puts two requests into one of Planfix's seconds.
SPACING_MARGIN = 1.02
FIRST_PROBE_BACKOFF = timedelta(minutes=15)
MAX_PROBE_BACKOFF = timedelta(hours=2)
HOLD_CAP = 5.0  # seconds: a slow (or hung) request holds back the next one at most this long
FIRST_SHORT_PAUSE = timedelta(minutes=1)  # a 0007 while the header says plenty is left: a short-term limit
MAX_SHORT_PAUSE = timedelta(minutes=16)
RESET_SLACK = timedelta(minutes=1)  # probe a minute after the guessed reset, not on the stroke of midnight
HEADER_REFRESH = timedelta(minutes=10)  # Planfix refreshes X-RateLimit-Remaining about this often (§8)


class Priority(IntEnum):
    """Who is asking; lower goes first."""

    INTERACTIVE = 0  # a person is waiting: chat commands, `planfix-bot check`
    FEED = 1  # the action feed and start-up (user.get, status names)
    ENRICH = 2  # task cards of touched tasks, the first-start baseline
    SWEEP = 3  # the slow reconciliation sweep


_current: ContextVar[Priority] = ContextVar("planfix_priority", default=Priority.INTERACTIVE)


def current_priority() -> Priority:
    """The priority of requests made from here; INTERACTIVE unless a background job said otherwise."""
    return _current.get()


@contextmanager
def priority(level: Priority) -> Iterator[None]:
    """Requests made inside this block (in this task and the tasks it starts) carry `level`."""
    token = _current.set(level)
    try:
        yield
    finally:
        _current.reset(token)


class BudgetPaused(PlanfixLimitError):
    """A background request refused locally: the day's budget is used up or Planfix said 0007.
    `until` is when background requests may try again."""

    def __init__(self, message: str, *, until: datetime) -> None:
        super().__init__(message, code=None)
        self.until = until


def next_midnight(now: datetime, zone: tzinfo) -> datetime:
    """The next 00:00 in `zone` after `now` (the assumed daily reset), as an aware datetime."""
    local = now.astimezone(zone)
    return datetime.combine(local.date() + timedelta(days=1), time(0), zone)


class Budget:
    """Slots for Planfix requests: rate, priorities, today's allowance, the 0007 pause."""

    def __init__(
        self,
        *,
        requests_per_second: float = 1.0,
        daily: int = 20_000,
        reserve: int | None = None,
        zone: tzinfo = UTC,
        clock: Callable[[], datetime] = utc_now,
        interactive_run: int | None = 2,
    ) -> None:
        if requests_per_second <= 0:
            raise ValueError("requests_per_second must be positive")
        if daily <= 0:
            raise ValueError("the daily budget must be positive")
        self.requests_per_second = requests_per_second
        self.daily = daily
        # Kept back for people: background work stops when only this much is left.
        self.reserve = reserve if reserve is not None else max(20, daily // 50)
        self.clock = clock
        self._zone = zone
        self._period = SPACING_MARGIN / requests_per_second
        self._limiter = AsyncLimiter(1, self._period)
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._last_grant = float("-inf")  # loop time of the last slot handed out
        self._last_done = float("-inf")  # loop time the last request finished
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._dispatcher: asyncio.Task[None] | None = None
        self._day_ends = next_midnight(clock(), zone)
        self._used = 0
        self.header_remaining: int | None = None  # the last X-RateLimit-Remaining seen today
        self._header_seen: datetime | None = None  # when a header last arrived
        self._since_header = 0  # our requests since the header value last changed
        self.paused_until: datetime | None = None  # set by 0007; cleared by the next answer that is not 0007
        self.short_pause = False  # the current pause is a short-term limit (the day is not used up)
        self._probe_backoff = FIRST_PROBE_BACKOFF
        self._short_backoff = FIRST_SHORT_PAUSE
        self.granted: dict[Priority, int] = dict.fromkeys(Priority, 0)  # slots handed out, for stats and tests
        self.interactive_run = interactive_run  # None: commands always first (no share kept for the feed)
        self._run = 0  # slots in a row given to commands while a background request waited

    # --- the day ----------------------------------------------------------------------------------------------

    @property
    def zone(self) -> tzinfo:
        return self._zone

    @zone.setter
    def zone(self, zone: tzinfo) -> None:
        """The API user's zone is learnt after start-up; the day then ends at midnight there."""
        self._zone = zone
        self._day_ends = next_midnight(self.clock(), zone)

    @property
    def day_ends(self) -> datetime:
        self._roll()
        return self._day_ends

    @property
    def used(self) -> int:
        """Requests counted against today's budget (ours, or more if the header says others used some)."""
        self._roll()
        return max(self._used, self._header_used())

    def _header_used(self) -> int:
        if self.header_remaining is None:
            return 0
        return self.daily - self.header_remaining + self._since_header

    def remaining(self) -> int:
        return max(0, self.daily - self.used)

    def seconds_to_reset(self) -> float:
        return max(0.0, (self.day_ends - self.clock()).total_seconds())

    def _roll(self) -> None:
        now = self.clock()
        if now >= self._day_ends:
            log.info("planfix.budget_new_day", used_yesterday=self._used)
            self._used = 0
            self._forget_header()
            self._day_ends = next_midnight(now, self._zone)

    def _forget_header(self) -> None:
        self.header_remaining = None
        self._header_seen = None
        self._since_header = 0

    # --- who may go ------------------------------------------------------------------------------------------

    def background_resume_at(self) -> datetime | None:
        """When background requests may go again, or None if they may go now."""
        self._roll()
        now = self.clock()
        if self.paused_until is not None and now < self.paused_until:
            return self.paused_until
        if self.daily - self._used <= self.reserve:
            return self._day_ends
        if self.daily - self._header_used() <= self.reserve and self._header_seen is not None:
            look_again = self._header_seen + HEADER_REFRESH
            return look_again if now < look_again else None
        return None

    def _refusal(self, level: Priority) -> BudgetPaused | None:
        if level == Priority.INTERACTIVE:
            return None
        until = self.background_resume_at()
        if until is None:
            return None
        if self.paused_until != until:
            why = "today's budget is used up"
        elif self.short_pause:
            why = "Planfix answered 0007 while plenty of today's requests are left (a short-term limit)"
        else:
            why = "Planfix answered 0007 (daily limit)"
        return BudgetPaused(f"background Planfix requests paused until {until.isoformat()}: {why}", until=until)

    async def acquire(self, level: Priority | None = None) -> None:
        """Wait for a slot. Background levels raise BudgetPaused instead while the budget is paused."""
        level = current_priority() if level is None else level
        refusal = self._refusal(level)
        if refusal is not None:
            raise refusal
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (int(level), next(self._seq), future))
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.create_task(self._dispatch(), name="planfix-budget")
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.exception() is None:
                self.release()  # granted, but its caller is gone: free the slot
            raise
        self._roll()
        self._used += 1
        self._since_header += 1

    def release(self) -> None:
        """The request of a granted slot has finished (answered, failed or given up): call exactly once per slot."""
        self._in_flight = max(0, self._in_flight - 1)
        self._last_done = asyncio.get_running_loop().time()
        if not self._in_flight:
            self._idle.set()

    async def _dispatch(self) -> None:
        """Hand each free slot to the best waiter at the moment the slot frees up."""
        loop = asyncio.get_running_loop()
        while self._waiting:
            if self._in_flight:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._idle.wait(), max(0.0, self._last_grant + HOLD_CAP - loop.time()))
            if not self._in_flight and self._last_done + self._period > loop.time():
                await asyncio.sleep(self._last_done + self._period - loop.time())
            await self._limiter.acquire()
            while self._waiting:
                level, _, future = self._next_waiter()
                if future.done():  # its caller was cancelled while waiting
                    continue
                refusal = self._refusal(Priority(level))
                if refusal is not None:  # paused while it waited: refuse it, and give the slot to the next one
                    future.set_exception(refusal)
                    continue
                future.set_result(None)
                self.granted[Priority(level)] += 1  # counted when decided: the waiter may resume much later
                self._in_flight += 1
                self._idle.clear()
                self._last_grant = loop.time()
                break

    def _next_waiter(self) -> tuple[int, int, asyncio.Future[None]]:
        """The best waiter, except that after `interactive_run` command slots in a row while background requests
        wait, the best background waiter goes first (the feed's guaranteed share)."""
        background = [w for w in self._waiting if w[0] != Priority.INTERACTIVE and not w[2].done()]
        if not background:
            self._run = 0
            return heapq.heappop(self._waiting)
        if self._waiting[0][0] == Priority.INTERACTIVE and (
            self.interactive_run is None or self._run < self.interactive_run
        ):
            self._run += 1
            return heapq.heappop(self._waiting)
        self._run = 0
        chosen = min(background)
        self._waiting.remove(chosen)
        heapq.heapify(self._waiting)
        return chosen

    # --- what Planfix told us --------------------------------------------------------------------------------

    def note_header(self, remaining: int) -> None:
        """X-RateLimit-Remaining: shows others' use of the day; a rising value means Planfix reset its counter."""
        self._roll()
        if remaining != self.header_remaining:
            if self.header_remaining is not None and remaining > self.header_remaining:
                log.info("planfix.budget_counter_reset", before=self.header_remaining, now=remaining)
                self._used = 0
            self.header_remaining = remaining
            self._since_header = 0
        self._header_seen = self.clock()

    def note_answer(self) -> None:
        """Planfix answered something other than 0007: the daily limit is not (or no longer) hit."""
        if self.paused_until is not None:
            log.info("planfix.budget_resumed", paused_until=self.paused_until.isoformat(), short=self.short_pause)
            self.paused_until = None
            self._probe_backoff = FIRST_PROBE_BACKOFF
            self._short_backoff = FIRST_SHORT_PAUSE
            if not self.short_pause:
                # Planfix serves requests again, so its counter was reset (whenever that really happens): start over.
                self._used = 0
                self._forget_header()
            self.short_pause = False

    def plenty_left(self) -> bool:
        """A fresh X-RateLimit-Remaining says more than the reserve is left today."""
        if self.header_remaining is None or self._header_seen is None:
            return False
        fresh = self.clock() - self._header_seen <= HEADER_REFRESH
        return fresh and self.header_remaining - self._since_header > self.reserve

    def note_limit_error(self) -> datetime:
        """Error 0007: pause background requests; returns until when. Short-term (minutes) while the header says
        plenty is left; until the daily reset otherwise."""
        now = self.clock()
        self._roll()
        if self.plenty_left():
            until = now + self._short_backoff
            self._short_backoff = min(self._short_backoff * 2, MAX_SHORT_PAUSE)
            self.paused_until, self.short_pause = until, True
            log.warning("planfix.rate_limited", until=until.isoformat(), remaining=self.header_remaining,
                        effect="a short-term limit: background requests wait minutes, not until the daily reset")
            return until
        was_short, self.short_pause = self.short_pause, False
        if self.paused_until is None or was_short:
            # First 0007 of an episode: wait for the assumed reset.
            until = max(self._day_ends, now) + RESET_SLACK
        else:
            # A probe after the assumed reset still hit the limit: try again later, less and less often.
            until = now + self._probe_backoff
            self._probe_backoff = min(self._probe_backoff * 2, MAX_PROBE_BACKOFF)
        self.paused_until = until
        log.warning("planfix.budget_paused", until=until.isoformat())
        return until

    # --- persistence ------------------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """What to keep across restarts (JSON-safe)."""
        self._roll()
        return {
            "day_ends": self._day_ends.isoformat(),
            "used": self._used,
            "paused_until": self.paused_until.isoformat() if self.paused_until else None,
            "probe_backoff_s": self._probe_backoff.total_seconds(),
            "short_pause": self.short_pause,
        }

    def restore(self, data: dict[str, Any]) -> None:
        """Take back a snapshot: today's count if that day is not over yet, and any pause."""
        try:
            day_ends = datetime.fromisoformat(data["day_ends"])
            used = int(data.get("used", 0))
            paused = data.get("paused_until")
            paused_until = datetime.fromisoformat(paused) if paused else None
            backoff = timedelta(seconds=float(data.get("probe_backoff_s", FIRST_PROBE_BACKOFF.total_seconds())))
        except (KeyError, TypeError, ValueError):
            log.warning("planfix.budget_restore_ignored", data=str(data)[:200])
            return
        now = self.clock()
        if now < day_ends:
            self._day_ends = day_ends
            self._used = max(self._used, used)
        self.paused_until = paused_until
        self._probe_backoff = backoff
        self.short_pause = bool(data.get("short_pause")) and paused_until is not None
