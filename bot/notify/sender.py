"""The sender: drains the outbox through Telegram, rate-limited, one ordered lane per chat, every failure classified.

How it works
* One worker per chat that has rows due, each sending that chat's rows in the order they were queued; different
  chats go out concurrently (at most `max_in_flight` requests at once), so a slow, limited or failing chat never
  holds up the others.
* Token buckets (aiolimiter): 25 messages/s overall, 1/s per chat; for a group also a sliding window of 20
  messages in any 60 s (Telegram counts a window, not a bucket). A burst waits; nothing is rejected.
* Every Telegram answer is classified (TELEGRAM.md §2): 429 pauses the chat (or everything, when several chats get
  it at once) for `retry_after` plus jitter without counting an attempt; 403 and "chat not found"/"no rights" mark
  the chat inactive (admins told once; /start in the chat re-enables it) — except "not enough rights to send",
  a group's restriction that is often temporary: held and retried for `restricted_hold` (24 h) first; a
  migrated group is followed to its new
  id; an HTML Telegram refuses goes out as plain text, a too-long text is cut; network errors, timeouts and 5xx are
  retried with exponential back-off.
* Nothing is lost: a row ends delivered, or waits with its reason in `last_error`, or is given up with a reason
  (and the admins are told). The outbox row is marked delivered only after Telegram said ok, so a crash or a
  timeout can repeat the one message that was in flight — at-least-once: a timed-out send may have arrived,
  and resending it (a possible duplicate) is preferred to losing it.
* A state file that refuses writes (read-only, full, I/O error) stops the sending: a send Telegram accepted but
  the store could not record is kept in memory and written first when a retried write (back-off) succeeds, so
  nothing is sent twice; the admins are told once; the poll jobs wait on the same `StoreHealth`.
* Coalescing (DESIGN rule 6, "quiet, but never late"): the first change of a task goes out at once; further changes
  of the same task for the same chat queued within `coalesce_window` of it edit that message in place
  (editMessageText, "message is not modified" counts as success) or, if still queued, join it.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import html
import itertools
import random
import re
import sqlite3
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

import structlog
from aiogram import Bot
from aiogram.exceptions import (
    ClientDecodeError,
    TelegramAPIError,
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramMigrateToChat,
    TelegramNetworkError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup, LinkPreviewOptions
from aiolimiter import AsyncLimiter

from bot.clock import utc_now
from bot.events import Event
from bot.notify.planfix_html import truncate, utf16_len
from bot.redact import redact
from state.health import is_write_failure
from state.records import OutboxItem
from state.store import Store

log = structlog.get_logger(__name__)

MESSAGE_LIMIT = 4096
MAX_BACKOFF = timedelta(minutes=10)
MAX_ATTEMPTS = 5  # for failures that are neither clearly transient nor clearly permanent
STUCK_NOTICE_ATTEMPTS = 8  # transient failures in a row (≈ 4 min of back-off) before the admins hear of it
GLOBAL_429_CHATS = 3  # 429s for this many different chats within GLOBAL_429_SPAN seconds pause everything
GLOBAL_429_SPAN = 2.0
CUT_UNITS = 2000  # a text Telegram calls too long even after our own measuring is cut to this
NOTICE_BATCH_SECONDS = 0.5  # admin notices raised within this time go out as one message
REASON_LIMIT = 300

STORE_RETRY_FIRST = 1.0  # seconds before the first retried write once the state file refused one; doubles
STORE_RETRY_MAX = 60.0

# 400 "not enough rights to send text messages to the chat": a group restricted the bot, often for a while. Its
# messages are held and retried, less and less often, for `restricted_hold`; only then is the chat given up.
_RESTRICTED = re.compile(r"not enough rights to send", re.IGNORECASE)
RESTRICTED_HOLD = timedelta(hours=24)
RESTRICTED_FIRST_RETRY = 60.0  # seconds; then the time restricted so far (doubling), at most RESTRICTED_MAX_RETRY
RESTRICTED_MAX_RETRY = 3600.0

# 400 descriptions that mean "this chat will not take messages from us" (TELEGRAM.md §2).
_DEAD_CHAT = re.compile(
    r"chat not found|have no rights|not enough rights|chat_write_forbidden|bot was kicked|"
    r"bot is not a member|user is deactivated|peer_id_invalid|group chat was deactivated|"
    r"bot can't initiate|bot was blocked",
    re.IGNORECASE,
)
# 400 descriptions about our text: the same content must still arrive, as plain text or cut.
_TEXT_PROBLEM = re.compile(
    r"can't parse entities|message is too long|message_too_long|text is empty|text must be non-empty|"
    r"entities_too_long|can't find end",
    re.IGNORECASE,
)
# 400 descriptions for an edit whose message can no longer be edited: send a new message instead.
_EDIT_GONE = re.compile(
    r"message to edit not found|message can't be edited|message_id_invalid|message identifier is not specified",
    re.IGNORECASE,
)
_TRANSIENT = (TelegramNetworkError, TelegramServerError, ClientDecodeError, TimeoutError, OSError)


@dataclass(frozen=True)
class Rendered:
    """A message ready to send: HTML text, a short fallback, and the link for the "Open in Planfix" button."""

    html: str
    fallback_html: str
    url: str | None
    silent: bool = False
    buttons: tuple[tuple[str, str], ...] = ()  # more buttons (text, callback data) in a row under the link (issue 13)


@dataclass(frozen=True)
class Limits:
    """Telegram's published guidance (bots FAQ): ~30 messages/s overall, ~1/s per chat, 20/min per group."""

    global_per_second: float = 25
    private_per_second: float = 1
    group_per_minute: float = 20
    group_window_seconds: float = 60  # Telegram counts a group's messages over any 60 s, not in a bucket


def plain_text(html_text: str) -> str:
    """The same content without markup, for when Telegram refuses to parse our HTML."""
    return html.unescape(re.sub(r"<[^>]*>", "", html_text))


def restriction_retry(since: datetime, now: datetime, *, hold: timedelta = RESTRICTED_HOLD,
                      first: float = RESTRICTED_FIRST_RETRY, cap: float = RESTRICTED_MAX_RETRY) -> datetime | None:
    """When to try a chat that restricts the bot again (1 min, 2, 4, … then hourly; the last try at the bound),
    or None: restricted for `hold` already, give up."""
    if now - since >= hold:
        return None
    delay = min(cap, max(first, (now - since).total_seconds()))
    return min(now + timedelta(seconds=delay), since + hold)


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
class _Plan:
    """What one Telegram request delivers: these rows, showing these events, as a new message or an edit."""

    rows: list[OutboxItem]
    events: list[Event]
    head_id: int  # the outbox row whose message this is (rows folded in point at it)
    edit_id: int | None = None  # Telegram message id to edit in place, or None for a new message


_EDIT_GONE_MARK = object()


@dataclass
class Sender:
    bot: Bot
    store: Store
    render: Callable[[Sequence[Event], int], Rendered]
    admin_ids: Sequence[int] = ()
    clock: Callable[[], datetime] = utc_now
    open_button_text: Callable[[int], str] = lambda chat_id: "Open in Planfix"
    coalesce_window: timedelta = timedelta(seconds=10)
    send_timeout: float = 30.0
    long_wait_alert: float = 300.0
    max_in_flight: int = 16
    defer: Callable[[int, Event, datetime], datetime | None] | None = None  # quiet hours at send time
    limits: Limits = field(default_factory=Limits)
    idle_wait: float = 5.0
    store_retry_first: float = STORE_RETRY_FIRST
    store_retry_max: float = STORE_RETRY_MAX
    restricted_hold: timedelta = RESTRICTED_HOLD
    restricted_first_retry: float = RESTRICTED_FIRST_RETRY
    restricted_max_retry: float = RESTRICTED_MAX_RETRY
    sent: int = 0  # messages sent (new ones)
    edited: int = 0  # messages updated in place by coalescing
    failed: int = 0  # rows given up
    retried: int = 0  # transient failures that were rescheduled
    rate_limited: int = 0  # 429 answers
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _stopping: bool = False
    _workers: dict[int, asyncio.Task[None]] = field(default_factory=dict)
    _paused: dict[int, datetime] = field(default_factory=dict)
    _global_pause: datetime | None = None
    _recent_429: list[tuple[float, int]] = field(default_factory=list)
    _told: set[tuple[str, int]] = field(default_factory=set)  # (kind of notice, chat) the admins already heard
    _global: AsyncLimiter | None = None
    _per_chat: dict[int, AsyncLimiter] = field(default_factory=dict)
    _per_group: dict[int, SlidingWindow] = field(default_factory=dict)
    _turnstile: PriorityTurnstile = field(default_factory=PriorityTurnstile)
    _backlog: dict[int, int] = field(default_factory=dict)  # due rows per chat, for the turnstile's order
    _in_flight: asyncio.Semaphore | None = None
    _notice_lines: list[str] = field(default_factory=list)  # admin notices waiting to be sent together
    _notice_task: asyncio.Task[None] | None = None
    # Sends Telegram accepted that the state file refused to record: written first when it takes writes again,
    # and nothing else is sent until then, so a refused write never turns into the same message sent again.
    _unrecorded: list[Callable[[], None]] = field(default_factory=list)
    _store_recovery: asyncio.Task[None] | None = None
    _store_told: bool = False
    _restricted: dict[int, datetime] | None = None  # chat -> restricted since (kept in the state file), loaded lazily

    # ── lifecycle ────────────────────────────────────────────────────────────────────────────────────────────

    def wake(self, *_: object) -> None:
        self._wake.set()

    def stop(self) -> None:
        """Stop taking new rows; a send in flight finishes and is recorded."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Send until stopped. Nothing pending is lost: unsent rows stay in the outbox for the next start."""
        log.info("sender.started")
        try:
            while not self._stopping:
                self._wake.clear()
                try:
                    self.dispatch()
                except Exception:
                    log.exception("sender.dispatch_error")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self._idle_timeout())
            if self._workers:
                await asyncio.wait(list(self._workers.values()))
        finally:
            for task in [*self._workers.values(), *([self._notice_task] if self._notice_task else []),
                         *([self._store_recovery] if self._store_recovery else [])]:
                task.cancel()
            self._flush_unrecorded_at_exit()
            log.info("sender.stopped", sent=self.sent, edited=self.edited, failed=self.failed,
                     retried=self.retried, rate_limited=self.rate_limited)

    async def drain(self) -> None:
        """Send everything that is due now and return (tests, benchmarks): the loop of `run` without the idling."""
        while True:
            self.dispatch()
            if not self._workers:
                return
            await asyncio.wait(list(self._workers.values()))

    def dispatch(self) -> None:
        """Start a worker for every chat with due rows that has none running and is not paused."""
        now = self.clock()
        if self._store_blocked():
            return
        if self._global_pause and self._global_pause > now:
            return
        for chat_id in self.store.due_chats(now):
            if chat_id in self._workers or self._paused_until(chat_id, now):
                continue
            worker = asyncio.create_task(self._chat_worker(chat_id), name=f"send:{chat_id}")
            self._workers[chat_id] = worker
            worker.add_done_callback(lambda task, chat=chat_id: self._worker_done(chat, task))

    def _worker_done(self, chat_id: int, task: asyncio.Task[None]) -> None:
        self._workers.pop(chat_id, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("sender.worker_crashed", chat=chat_id, error=repr(task.exception()))
            self._pause(chat_id, self.clock() + timedelta(seconds=5))  # no hot loop on a broken row
        self._wake.set()

    def _idle_timeout(self) -> float:
        now = self.clock()
        waits = [self.idle_wait]
        nxt = self.store.next_outbox_time_after(now)
        if nxt is not None:
            waits.append((nxt - now).total_seconds())
        pauses = [*self._paused.values(), *([self._global_pause] if self._global_pause else [])]
        waits += [(until - now).total_seconds() for until in pauses if until > now]
        return max(0.01, min(waits))

    def _paused_until(self, chat_id: int, now: datetime) -> datetime | None:
        until = self._paused.get(chat_id)
        if until is not None and until <= now:
            del self._paused[chat_id]
            return None
        return until

    def _pause(self, chat_id: int, until: datetime) -> None:
        self._paused[chat_id] = max(until, self._paused.get(chat_id, until))

    # ── one chat's lane ──────────────────────────────────────────────────────────────────────────────────────

    async def _chat_worker(self, chat_id: int) -> None:
        """Send this chat's due rows oldest first; stop at the first one that has to wait (order is kept)."""
        while not self._stopping:
            now = self.clock()
            if self._paused_until(chat_id, now) or (self._global_pause and self._global_pause > now):
                return
            if self._store_blocked():
                return
            row = self.store.next_due_row(chat_id, now)
            if row is None:
                self._backlog.pop(chat_id, None)
                return
            self._backlog[chat_id] = self.store.due_count(chat_id, now)
            if not await self.deliver_safely(row):
                return

    async def deliver_safely(self, row: OutboxItem) -> bool:
        """`deliver`, but a bug or a broken row only costs that row an attempt — never the queue."""
        try:
            return await self.deliver(row)
        except asyncio.CancelledError:
            raise
        except sqlite3.Error as exc:
            if not (is_write_failure(exc) or self.store.health.failing):
                raise
            # The state file refused a write (the row's retry, a give-up, a deactivation): nothing was lost — the
            # row is still pending as it was — but nothing more is sent until the file takes writes again.
            self._store_failed(exc)
            return False
        except Exception as exc:
            log.exception("sender.deliver_crashed", chat=row.chat_id, event_key=row.event_key)
            reason = f"internal error: {type(exc).__name__}: {exc}"
            if row.attempts + 1 >= MAX_ATTEMPTS:
                return await self._give_up(row, reason)
            return await self._backoff(row, reason)

    async def deliver(self, row: OutboxItem) -> bool:
        """Send one outbox row (with any rows folded into it); True when the chat may go on to its next row."""
        now = self.clock()
        chat = self.store.chat(row.chat_id)
        if chat is not None and not chat.active:
            self.store.mark_failed(row.id, f"chat inactive: {chat.reason}", now)
            self.failed += 1
            return True
        event = Event.from_json(row.payload)
        if self.defer is not None:
            until = self.defer(row.chat_id, event, now)
            if until is not None:  # a late row must not slip into quiet hours: deferred, never dropped
                self.store.mark_retry(row.id, not_before=until, reason="quiet hours", count_attempt=False)
                return True
        outcome = await self._transmit(row, self._plan(row, event, now, allow_edit=True))
        if outcome is _EDIT_GONE_MARK:  # the message to update was deleted or is too old: a new message instead
            outcome = await self._transmit(row, self._plan(row, event, now, allow_edit=False))
        return bool(outcome)

    def _plan(self, row: OutboxItem, event: Event, now: datetime, *, allow_edit: bool) -> _Plan:
        window = self.coalesce_window
        if not event.coalesces or window <= timedelta(0):
            return _Plan([row], [event], head_id=row.id)
        queued = row.created_at or now
        rows, events, head_id, edit_id, anchor = [row], [event], row.id, None, queued
        last = self.store.last_message_for_task(row.chat_id, event.task_id) if allow_edit else None
        if last is not None and timedelta(0) <= queued - last[2] <= window:
            head_id, edit_id, anchor = last[0], last[1], last[2]
            shown = [Event.from_json(p) for p in self.store.message_payloads(head_id)]
            events = shown + events
        for later in self.store.pending_for_task(row.chat_id, event.task_id, now, after_id=row.id):
            if later.created_at is None or later.created_at - anchor > window:
                break
            later_event = Event.from_json(later.payload)
            if not later_event.coalesces:
                continue
            rows.append(later)
            events.append(later_event)
        return _Plan(rows, events, head_id=head_id, edit_id=edit_id)

    async def _transmit(self, row: OutboxItem, plan: _Plan) -> bool | object:
        rendered = self.render(plan.events, row.chat_id)
        chat_id = row.chat_id
        try:
            message_id = await self._send_with_fallbacks(chat_id, rendered, plan.edit_id, row)
        except TelegramRetryAfter as exc:
            return await self._rate_limited(row, exc.retry_after)
        except TelegramMigrateToChat as exc:
            if exc.migrate_to_chat_id == chat_id:  # nonsense, and following it would settle the row unsent
                return await self._backoff(row, f"telegram: {exc.message}")
            self.store.migrate_chat(chat_id, exc.migrate_to_chat_id, self.clock())
            log.warning("telegram.chat_migrated", old_chat=chat_id, new_chat=exc.migrate_to_chat_id)
            self._wake.set()  # the new chat id gets its own lane; the row is resent there
            return True
        except TelegramForbiddenError as exc:
            await self._deactivate(chat_id, exc.message)
            return True
        except TelegramBadRequest as exc:
            text = exc.message
            if plan.edit_id is not None and "message is not modified" in text.lower():
                message_id = plan.edit_id  # the chat already shows exactly this: done
            elif plan.edit_id is not None and _EDIT_GONE.search(text):
                log.info("telegram.edit_gone", chat=chat_id, message_id=plan.edit_id, error=text)
                return _EDIT_GONE_MARK
            elif _RESTRICTED.search(text):
                return await self._held_by_restriction(row, text)
            elif _DEAD_CHAT.search(text):
                await self._deactivate(chat_id, text)
                return True
            else:
                return await self._give_up(row, f"telegram refused: {text}")
        except (TelegramUnauthorizedError, TelegramNotFound) as exc:
            # A wrong bot token (401) or API address (404) is a configuration problem, not this message's: keep
            # everything queued, pause all sending, and try again later.
            hint = "telegram.token" if isinstance(exc, TelegramUnauthorizedError) else "telegram.api_base"
            log.error("telegram.misconfigured", error=exc.message, hint=f"check {hint}")
            until = self.clock() + MAX_BACKOFF
            self._global_pause = until
            self.store.mark_retry(row.id, not_before=until, reason=f"telegram: {exc.message} (check {hint})",
                                  count_attempt=False)
            await self._tell_once("misconfigured", 0, f"⚠️ Telegram refuses the bot: {_reason(exc.message)} "
                                                      f"(check {hint}). Messages are kept until it is fixed.")
            return False
        except _TRANSIENT as exc:
            return await self._backoff(row, f"transient: {type(exc).__name__}: {exc}")
        except TelegramAPIError as exc:
            if row.attempts + 1 >= MAX_ATTEMPTS:
                return await self._give_up(row, f"telegram: {exc.message}")
            return await self._backoff(row, f"telegram: {exc.message}")
        record = partial(self.store.mark_sent, [r.id for r in plan.rows], message_id, self.clock(),
                         group_id=plan.head_id)
        try:
            record()
        except sqlite3.Error as exc:
            # Telegram has the message but the state file does not know: keep the record in memory and stop
            # sending until it can be written, instead of sending the row again (issue 11: no spam on a full disk).
            self._unrecorded.append(record)
            self._store_failed(exc)
            self.sent += plan.edit_id is None
            self.edited += plan.edit_id is not None
            log.error("telegram.sent_unrecorded", chat=chat_id, event_key=row.event_key, message_id=message_id,
                      error=str(exc))
            return False
        if plan.edit_id is None:
            self.sent += 1
        else:
            self.edited += 1
        self._told.discard(("long_wait", chat_id))
        self._told.discard(("stuck", chat_id))
        if chat_id in self._restricted_chats():
            del self._restricted_chats()[chat_id]
            self._told.discard(("restricted", chat_id))
            self.store.set_restricted_since(chat_id, None)
            log.info("telegram.chat_restriction_over", chat=chat_id)
        log.info("telegram.sent", chat=chat_id, event_key=row.event_key, message_id=message_id,
                 rows=len(plan.rows), edit=plan.edit_id is not None)
        return True

    # ── a state file that refuses writes ─────────────────────────────────────────────────────────────────────

    def _store_blocked(self) -> bool:
        """True while the state file refuses writes or a send is still unrecorded: then nothing is sent."""
        if self.store.health.failing or self._unrecorded:
            self._start_store_recovery()
            return True
        return False

    def _store_failed(self, exc: BaseException) -> None:
        self.store.health.failed(exc, self.clock())
        self._start_store_recovery()

    def _start_store_recovery(self) -> None:
        if self._store_recovery is not None and not self._store_recovery.done():
            return
        if not self._store_told:
            self._store_told = True
            error = self.store.health.error or "a write failed"
            log.error("store.write_failed", error=error, path=str(self.store.path),
                      effect="sending and Planfix polling paused; retrying the write with back-off")
            self._notify(f"⚠️ The bot cannot write its state file: {_reason(error)}. Sending and Planfix polling "
                         "are paused so that nothing is sent twice; they resume by themselves once the file can be "
                         "written again (free disk space, check that it is not read-only).")
        self._store_recovery = asyncio.create_task(self._recover_store(), name="store-recovery")

    async def _recover_store(self) -> None:
        """Retry the refused writes with back-off (first the sends Telegram accepted, then a probe); on success
        clear the shared health, so the poll jobs and the lanes resume by themselves."""
        delay = self.store_retry_first
        while not self._stopping:
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            try:
                while self._unrecorded:
                    self._unrecorded[0]()
                    self._unrecorded.pop(0)
                self.store.probe_write(self.clock())
            except sqlite3.Error as exc:
                self.store.health.failed(exc, self.clock())
                delay = min(self.store_retry_max, delay * 2)
                log.warning("store.still_failing", error=str(exc), retry_in_s=round(delay, 1))
                continue
            since = self.store.health.since
            self.store.health.recovered()
            self._store_told = False
            log.info("store.recovered", failing_for_s=round((self.clock() - since).total_seconds(), 1) if since
                     else None)
            self._wake.set()
            return

    def _flush_unrecorded_at_exit(self) -> None:
        try:
            while self._unrecorded:
                self._unrecorded[0]()
                self._unrecorded.pop(0)
        except sqlite3.Error as exc:
            # As after a crash: each of these chats may get its last message once more after the restart.
            log.error("store.unrecorded_at_exit", sends=len(self._unrecorded), error=str(exc))

    # ── requests ─────────────────────────────────────────────────────────────────────────────────────────────

    async def _send_with_fallbacks(self, chat_id: int, rendered: Rendered, edit_id: int | None,
                                   row: OutboxItem) -> int:
        """Send (or edit) the HTML; if Telegram refuses the text itself, the same content as plain text, then cut,
        then the short form with the link. Something always arrives. Raises the error to classify otherwise."""
        try:
            return await self._request(chat_id, rendered, rendered.html, parse_html=True, edit_id=edit_id)
        except TelegramBadRequest as exc:
            if not _TEXT_PROBLEM.search(exc.message):
                raise
            first = exc
        plain = plain_text(rendered.html).strip()
        candidates = [
            (truncate(plain, MESSAGE_LIMIT), False),
            (truncate(plain, CUT_UNITS), False),
            (rendered.fallback_html, True),
            (plain_text(rendered.fallback_html), False),
        ]
        for text, as_html in candidates:
            if not text.strip():
                continue
            try:
                message_id = await self._request(chat_id, rendered, text, parse_html=as_html, edit_id=edit_id)
            except TelegramBadRequest as again:
                if not _TEXT_PROBLEM.search(again.message):
                    raise
                log.warning("telegram.fallback_refused", chat=chat_id, error=again.message)
                continue
            log.warning("telegram.sent_fallback", chat=chat_id, event_key=row.event_key, error=first.message,
                        html=as_html, units=len(text))
            return message_id
        raise first

    async def _request(self, chat_id: int, rendered: Rendered, text: str, *, parse_html: bool,
                       edit_id: int | None) -> int:
        if chat_id >= 0:
            return await self._paced_request(chat_id, rendered, text, parse_html=parse_html, edit_id=edit_id)
        async with self._group_limiter(chat_id).slot():  # held until Telegram answered: the window counts that
            return await self._paced_request(chat_id, rendered, text, parse_html=parse_html, edit_id=edit_id)

    async def _paced_request(self, chat_id: int, rendered: Rendered, text: str, *, parse_html: bool,
                             edit_id: int | None) -> int:
        await self._pace(chat_id)
        markup = None
        if rendered.url:  # the button goes on every message and stays on every edit
            button = InlineKeyboardButton(text=self.open_button_text(chat_id), url=rendered.url)
            more = [InlineKeyboardButton(text=text, callback_data=data) for text, data in rendered.buttons]
            markup = InlineKeyboardMarkup(inline_keyboard=[[button], *([more] if more else [])])
        async with self._slots():
            if edit_id is None:
                message = await self.bot.send_message(
                    chat_id,
                    text,
                    parse_mode="HTML" if parse_html else None,
                    link_preview_options=LinkPreviewOptions(is_disabled=True),
                    disable_notification=rendered.silent,
                    reply_markup=markup,
                    request_timeout=int(self.send_timeout) or 1,
                )
                return message.message_id
            await self.bot.edit_message_text(
                text=text,
                chat_id=chat_id,
                message_id=edit_id,
                parse_mode="HTML" if parse_html else None,
                link_preview_options=LinkPreviewOptions(is_disabled=True),
                reply_markup=markup,
                request_timeout=int(self.send_timeout) or 1,
            )
            return edit_id

    def _slots(self) -> asyncio.Semaphore:
        if self._in_flight is None:
            self._in_flight = asyncio.Semaphore(self.max_in_flight)
        return self._in_flight

    async def _pace(self, chat_id: int, *, urgent: bool = False) -> None:
        """Wait for this chat's bucket, then the global one (a group's window is waited for around the request, in
        `_request`): a burst is queued, never rejected."""
        await self._chat_limiter(chat_id).acquire()
        if self._global is None:
            self._global = AsyncLimiter(self.limits.global_per_second, 1)
        async with self._turnstile.turn(float("inf") if urgent else self._remaining_seconds(chat_id)):
            await self._global.acquire()

    def _remaining_seconds(self, chat_id: int) -> float:
        """How long this chat's due backlog takes at the chat's own rate: the turnstile serves the longest first."""
        n = self._backlog.get(chat_id, 1)
        per_message = 1 / self.limits.private_per_second
        if chat_id >= 0:
            return n * per_message
        per_window = max(1, int(self.limits.group_per_minute))
        return (n - 1) // per_window * self.limits.group_window_seconds + ((n - 1) % per_window + 1) * per_message

    def _chat_limiter(self, chat_id: int) -> AsyncLimiter:
        """One message per second in any chat (Telegram: "avoid sending more than one message per second")."""
        limiter = self._per_chat.get(chat_id)
        if limiter is None:
            limiter = self._per_chat[chat_id] = AsyncLimiter(1, 1 / self.limits.private_per_second)
        return limiter

    def _group_limiter(self, chat_id: int) -> SlidingWindow:
        """Groups and channels (negative ids) also get 20 messages in any 60 s (issue 11: a sliding window, as
        Telegram counts; a bucket let ~40 through in the first minute and drew 429s of 17–22 s)."""
        window = self._per_group.get(chat_id)
        if window is None:
            window = self._per_group[chat_id] = SlidingWindow(int(self.limits.group_per_minute),
                                                              self.limits.group_window_seconds)
        return window

    # ── outcomes ─────────────────────────────────────────────────────────────────────────────────────────────

    async def _rate_limited(self, row: OutboxItem, seconds: float) -> bool:
        """429: wait what Telegram asks (plus jitter) for this chat — or for all when several chats got it —
        without counting an attempt. A very long wait is reported to the admins once."""
        now = self.clock()
        self.rate_limited += 1
        until = now + timedelta(seconds=seconds + random.uniform(0.1, 1.0))
        self._pause(row.chat_id, until)
        self.store.mark_retry(row.id, not_before=until, reason=f"429: retry after {seconds} s", count_attempt=False)
        mono = time.monotonic()
        self._recent_429 = [(t, c) for t, c in self._recent_429 if mono - t <= GLOBAL_429_SPAN]
        self._recent_429.append((mono, row.chat_id))
        if len({c for _, c in self._recent_429}) >= GLOBAL_429_CHATS:
            self._global_pause = max(until, self._global_pause or until)
            log.warning("telegram.global_pause", seconds=seconds)
        long_wait = seconds >= self.long_wait_alert
        (log.warning if long_wait else log.info)("telegram.retry_after", chat=row.chat_id, seconds=seconds)
        if long_wait:
            await self._tell_once(
                "long_wait", row.chat_id,
                f"⏳ Telegram asks the bot to wait {int(seconds)} s before writing to chat {row.chat_id} again "
                "(too many requests). Messages for it are kept and will go out after the wait.",
            )
        return False

    def _restricted_chats(self) -> dict[int, datetime]:
        if self._restricted is None:
            self._restricted = self.store.restricted_chats()
        return self._restricted

    async def _held_by_restriction(self, row: OutboxItem, text: str) -> bool:
        """The chat does not let the bot write for now: hold its messages (order kept, no attempt counted) and try
        again later and later; after `restricted_hold` give the chat up like a dead one, with the reason."""
        now, chat_id = self.clock(), row.chat_id
        restricted = self._restricted_chats()
        since = restricted.get(chat_id)
        if since is None:
            since = restricted[chat_id] = now
            self.store.set_restricted_since(chat_id, now)
        retry_at = restriction_retry(since, now, hold=self.restricted_hold, first=self.restricted_first_retry,
                                     cap=self.restricted_max_retry)
        if retry_at is None:
            del restricted[chat_id]
            self.store.set_restricted_since(chat_id, None)
            hours = self.restricted_hold.total_seconds() / 3600
            await self._deactivate(chat_id, f"{text} (still after {hours:g} h of retries)")
            return True
        self._pause(chat_id, retry_at)
        self.store.mark_retry(row.id, not_before=retry_at, reason=f"restricted: {text}", count_attempt=False)
        log.warning("telegram.chat_restricted", chat=chat_id, error=text, since=since.isoformat(),
                    retry_in_s=round((retry_at - now).total_seconds(), 1))
        hours = self.restricted_hold.total_seconds() / 3600
        await self._tell_once(
            "restricted", chat_id,
            f"⏸ Chat {chat_id} does not let the bot write right now: {_reason(text)}. Its messages are held and "
            f"retried, less and less often, for up to {hours:g} h; then they are given up.",
        )
        return False

    async def _backoff(self, row: OutboxItem, reason: str) -> bool:
        """A transient failure: retry this row later (exponential, with jitter); the chat's later rows wait too."""
        delay = min(MAX_BACKOFF.total_seconds(), 2 ** min(row.attempts, 12)) * random.uniform(0.75, 1.25)
        until = self.clock() + timedelta(seconds=delay)
        self._pause(row.chat_id, until)
        self.store.mark_retry(row.id, not_before=until, reason=reason)
        self.retried += 1
        log.warning("telegram.retry", chat=row.chat_id, event_key=row.event_key, attempt=row.attempts + 1,
                    delay=round(delay, 2), reason=reason)
        if row.attempts + 1 >= STUCK_NOTICE_ATTEMPTS:
            await self._tell_once(
                "stuck", row.chat_id,
                f"⚠️ Messages to chat {row.chat_id} are delayed: {_reason(reason)}. The bot keeps retrying.",
            )
        return False

    async def _give_up(self, row: OutboxItem, reason: str) -> bool:
        self.store.mark_failed(row.id, reason, self.clock())
        self.failed += 1
        log.error("telegram.gave_up", chat=row.chat_id, event_key=row.event_key, reason=reason)
        await self._tell_once(
            f"gave_up:{reason[:80]}", row.chat_id,
            f"⚠️ A notification for chat {row.chat_id} could not be delivered and was given up: "
            f"{_reason(reason)}",
        )
        return True

    async def _deactivate(self, chat_id: int, reason: str) -> None:
        now = self.clock()
        self.failed += self.store.fail_pending_for_chat(chat_id, f"chat inactive: {reason}", now)
        if self.store.set_chat_active(chat_id, False, reason, now):
            log.warning("telegram.chat_deactivated", chat=chat_id, reason=reason)
            self._notify(f"⚠️ Chat {chat_id} no longer accepts messages: {_reason(reason)}. "
                         "Nothing more is sent there until someone sends /start in it.")

    async def _tell_once(self, kind: str, chat_id: int, text: str) -> None:
        if (kind, chat_id) in self._told:
            return
        self._told.add((kind, chat_id))
        self._notify(text)

    def _notify(self, text: str) -> None:
        """Tell the admins in the background — the admin chat's own pacing must not hold up the lane that found
        the problem — and fold notices raised together (six chats gone at once) into one message."""
        self._notice_lines.append(text)
        if self._notice_task is None or self._notice_task.done():
            self._notice_task = asyncio.create_task(self._flush_notices(), name="admin-notices")

    async def _flush_notices(self) -> None:
        while self._notice_lines:
            await asyncio.sleep(NOTICE_BATCH_SECONDS)
            batch, self._notice_lines = self._notice_lines, []
            for text in _pack(batch, MESSAGE_LIMIT - 96):
                await self.tell_admins(text)

    async def notices_sent(self) -> None:
        """Wait until the admin notices under way have gone out (tests, benchmarks)."""
        while self._notice_task is not None and not self._notice_task.done():
            await asyncio.gather(self._notice_task, return_exceptions=True)

    async def tell_admins(self, text: str) -> None:
        """Best effort, rate-limited like everything else: a problem report must never take the sender down."""
        text = redact(text)  # notices quote Planfix and Telegram error texts: no secret may reach a chat
        for admin in self.admin_ids:
            try:
                await self._pace(admin, urgent=True)
                async with self._slots():
                    await self.bot.send_message(admin, text, parse_mode="HTML",
                                                request_timeout=int(self.send_timeout) or 1)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("telegram.admin_notice_failed", admin=admin, error=str(exc))


def _reason(text: str) -> str:
    """A Telegram or network error for an admin notice: redacted, then one line, bounded, escaped."""
    return html.escape(truncate(" ".join(redact(text).split()), REASON_LIMIT))


def _pack(notices: Sequence[str], limit: int) -> list[str]:
    """Notices joined by blank lines into as few messages as fit Telegram's limit (each notice is short)."""
    messages: list[str] = []
    for notice in notices:
        if messages and utf16_len(plain_text(messages[-1] + "\n\n" + notice)) <= limit:
            messages[-1] += "\n\n" + notice
        else:
            messages.append(notice)
    return messages
