"""The sender's lane loop: drains the outbox through Telegram, one ordered lane per chat, every outcome settled."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

import structlog
from aiogram import Bot
from structlog.contextvars import bound_contextvars

from bot.clock import utc_now
from bot.events import Event
from bot.notify import admin_notices as notices
from bot.notify.admin_notices import AdminNotices
from bot.notify.coalesce import Plan, Sent, coalesces, edit_target, plan
from bot.notify.pacing import Limits, Pacing, PriorityTurnstile, SlidingWindow
from bot.notify.store_guard import STORE_RETRY_FIRST, STORE_RETRY_MAX, StoreGuard
from bot.notify.transmit import CUT_UNITS, Rendered, Transmitter, plain_text
from bot.notify.verdicts import (
    MAX_ATTEMPTS,
    MAX_BACKOFF,
    RESTRICTED_FIRST_RETRY,
    RESTRICTED_HOLD,
    RESTRICTED_MAX_RETRY,
    Crash,
    Deactivate,
    Done,
    EditGone,
    GiveUp,
    Hold,
    Migrate,
    Misconfigured,
    Retry,
    StoreRefused,
    Verdict,
    Wait,
    backoff_seconds,
    classify,
    restriction_retry,
)
from bot.redact import redact
from state.records import OutboxItem
from state.store import Store

__all__ = ["CUT_UNITS", "MAX_ATTEMPTS", "Limits", "PriorityTurnstile", "Rendered", "Sender", "SlidingWindow",
           "plain_text", "restriction_retry"]

log = structlog.get_logger(__name__)

STUCK_NOTICE_ATTEMPTS = 8  # transient failures in a row (≈ 4 min of back-off) before the admins hear of it




@dataclass
class Sender:
    """Per outbox row, in its chat's lane: gate (inactive chat, quiet hours) → plan (`coalesce.plan`: a new
    message, an edit, rows folded in) → transmit (`transmit.Transmitter`, paced by `pacing.Pacing`) → classify any
    error (`verdicts.classify`) → settle: record the send, or apply the verdict (admins told via `AdminNotices`).

    * One lane per chat with rows due, sending them in the order they were queued; different chats go out
      concurrently (at most `max_in_flight` requests at once), so a slow, limited or failing chat never holds up
      the others.
    * Nothing is lost: a row ends delivered, or waits with its reason in `last_error`, or is given up with a
      reason (and the admins are told). A row is marked delivered only after Telegram said ok, so a crash or a
      timeout can repeat the one message that was in flight — at-least-once, preferred to losing it.
    * A state file that refuses writes (read-only, full, I/O error) stops the sending: a send Telegram accepted
      but the store could not record is kept in memory and written first when a retried write (back-off)
      succeeds, so nothing is sent twice; the admins are told once; the poll jobs wait on the same `StoreHealth`.
    """

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
    pacing: Pacing = field(init=False)
    transmitter: Transmitter = field(init=False)
    notices: AdminNotices = field(init=False)
    guard: StoreGuard = field(init=False)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _stopping: bool = False
    _workers: dict[int, asyncio.Task[None]] = field(default_factory=dict)
    _restricted: dict[int, datetime] | None = None  # chat -> restricted since (kept in the state file), loaded lazily

    def __post_init__(self) -> None:
        self.pacing = Pacing(self.limits, self.max_in_flight)
        self.transmitter = Transmitter(self.bot, self.pacing, self.open_button_text, self.send_timeout)
        self.notices = AdminNotices(self.tell_admins)
        self.guard = StoreGuard(self.store, self.clock, self.notices, self.wake, self.store_retry_first,
                                self.store_retry_max)

    # ── lifecycle ────────────────────────────────────────────────────────────────────────────────────────────

    def wake(self, *_: object) -> None:
        self._wake.set()

    def stop(self) -> None:
        """Stop taking new rows; a send in flight finishes and is recorded."""
        self._stopping = True
        self.guard.stop()
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
            for task in self._workers.values():
                task.cancel()
            self.notices.cancel()
            self.guard.close()
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
        if self.guard.blocked() or self.pacing.all_paused(now):
            return
        for chat_id in self.store.outbox.due_chats(now):
            if chat_id in self._workers or self.pacing.paused_until(chat_id, now):
                continue
            worker = asyncio.create_task(self._lane(chat_id), name=f"send:{chat_id}")
            self._workers[chat_id] = worker
            worker.add_done_callback(lambda task, chat=chat_id: self._worker_done(chat, task))

    def _worker_done(self, chat_id: int, task: asyncio.Task[None]) -> None:
        self._workers.pop(chat_id, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("sender.worker_crashed", chat=chat_id, error=repr(task.exception()))
            self.pacing.pause(chat_id, self.clock() + timedelta(seconds=5))  # no hot loop on a broken row
        self._wake.set()

    def _idle_timeout(self) -> float:
        now = self.clock()
        waits = [self.idle_wait]
        nxt = self.store.outbox.next_outbox_time_after(now)
        if nxt is not None:
            waits.append((nxt - now).total_seconds())
        waits += [(until - now).total_seconds() for until in self.pacing.pauses_ending_after(now)]
        return max(0.01, min(waits))

    # ── one chat's lane ──────────────────────────────────────────────────────────────────────────────────────

    async def _lane(self, chat_id: int) -> None:
        """Send this chat's due rows oldest first; stop at the first one that has to wait (order is kept)."""
        with bound_contextvars(chat=chat_id):
            while not self._stopping:
                now = self.clock()
                if not self.pacing.may_send(chat_id, now) or self.guard.blocked():
                    return
                row = self.store.outbox.next_due_row(chat_id, now)
                if row is None:
                    self.pacing.set_backlog(chat_id, None)
                    return
                self.pacing.set_backlog(chat_id, self.store.outbox.due_count(chat_id, now))
                with bound_contextvars(event_key=row.event_key):
                    if not await self.deliver_safely(row):
                        return

    async def deliver_safely(self, row: OutboxItem) -> bool:
        """`deliver`, but a bug or a broken row only costs that row an attempt — never the queue."""
        try:
            return await self.deliver(row)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            verdict = classify(exc, chat_id=row.chat_id, attempts=row.attempts,
                               store_failing=self.store.health.failing)
            if isinstance(verdict, Crash):
                raise
            if isinstance(verdict, StoreRefused):
                # The state file refused a write (the row's retry, a give-up, a deactivation): nothing was lost —
                # the row is still pending as it was — but nothing more is sent until the file takes writes again.
                self.guard.failed(exc)
                return False
            if isinstance(verdict, Retry | GiveUp) and verdict.internal:
                log.exception("sender.deliver_crashed")
            return await self._settle(row, verdict)

    async def deliver(self, row: OutboxItem) -> bool:
        """Send one outbox row (with any rows folded into it); True when the chat may go on to its next row."""
        now = self.clock()
        chat = self.store.chats.chat(row.chat_id)
        if chat is not None and not chat.active:
            self.store.outbox.mark_failed(row.id, f"chat inactive: {chat.reason}", now)
            self.failed += 1
            return True
        event = Event.from_json(row.payload)
        if self.defer is not None:
            until = self.defer(row.chat_id, event, now)
            if until is not None:  # a late row must not slip into quiet hours: deferred, never dropped
                self.store.outbox.mark_retry(row.id, not_before=until, reason="quiet hours", count_attempt=False)
                return True
        message = self._plan(row, event, now, allow_edit=True)
        outcome = await self._transmit(row, message)
        if isinstance(outcome, EditGone):  # the message to update was deleted or is too old: a new message instead
            log.info("telegram.edit_gone", message_id=message.edit_id, error=outcome.reason)
            message = self._plan(row, event, now, allow_edit=False)
            outcome = await self._transmit(row, message)
        if isinstance(outcome, int):
            return self._record(row, message, outcome)
        return await self._settle(row, outcome)

    def _plan(self, row: OutboxItem, event: Event, now: datetime, *, allow_edit: bool) -> Plan:
        """Gather what the coalescing plan needs from the store (only when it coalesces), then plan."""
        window = self.coalesce_window
        if not coalesces(event, window):
            return plan(row, event, now=now, window=window)
        last = self.store.outbox.last_message_for_task(row.chat_id, event.task_id) if allow_edit else None
        target = edit_target(row.created_at or now, Sent(*last) if last else None, window)
        shown = [Event.from_json(p) for p in self.store.outbox.message_payloads(target.head_id)] if target else []
        later = [(r, Event.from_json(r.payload))
                 for r in self.store.outbox.pending_for_task(row.chat_id, event.task_id, now, after_id=row.id)]
        return plan(row, event, now=now, window=window, target=target, shown=shown, later=later)

    async def _transmit(self, row: OutboxItem, message: Plan) -> int | Verdict:
        """The Telegram message id, or the verdict on why there is none."""
        rendered = self.render(message.events, row.chat_id)
        try:
            return await self.transmitter.send(row.chat_id, rendered, message.edit_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            verdict = classify(exc, chat_id=row.chat_id, attempts=row.attempts, editing=message.edit_id is not None,
                               store_failing=self.store.health.failing)
            if isinstance(verdict, Done) and message.edit_id is not None:
                return message.edit_id  # "message is not modified": the chat already shows exactly this
            if isinstance(verdict, Crash | StoreRefused) or (isinstance(verdict, Retry | GiveUp) and verdict.internal):
                raise  # not Telegram's answer: `deliver_safely` settles it
            return verdict

    def _record(self, row: OutboxItem, message: Plan, message_id: int) -> bool:
        """Telegram has the message: mark its rows delivered (or keep that in memory while the file refuses it)."""
        chat_id = row.chat_id
        record = partial(self.store.outbox.mark_sent, [r.id for r in message.rows], message_id, self.clock(),
                         group_id=message.head_id)
        try:
            record()
        except sqlite3.Error as exc:
            # Telegram has the message but the state file does not know: keep the record in memory and stop
            # sending until it can be written, instead of sending the row again (no spam on a full disk).
            self.guard.failed(exc, unrecorded=record)
            self.sent += message.edit_id is None
            self.edited += message.edit_id is not None
            log.error("telegram.sent_unrecorded", message_id=message_id, error=str(exc))
            return False
        if message.edit_id is None:
            self.sent += 1
        else:
            self.edited += 1
        self.notices.over(chat_id, "long_wait", "stuck")
        if chat_id in self._restricted_chats():
            del self._restricted_chats()[chat_id]
            self.notices.over(chat_id, "restricted")
            self.store.chats.set_restricted_since(chat_id, None)
            log.info("telegram.chat_restriction_over")
        log.info("telegram.sent", message_id=message_id, rows=len(message.rows), edit=message.edit_id is not None)
        return True

    # ── verdicts ─────────────────────────────────────────────────────────────────────────────────────────────

    async def _settle(self, row: OutboxItem, verdict: Verdict) -> bool:
        """Apply the verdict to the row (and its chat); True when the chat may go on to its next row."""
        match verdict:
            case Wait(seconds=seconds):
                return self._rate_limited(row, seconds)
            case Migrate(new_chat_id=new_chat):
                self.store.chats.migrate_chat(row.chat_id, new_chat, self.clock())
                log.warning("telegram.chat_migrated", new_chat=new_chat)
                self._wake.set()  # the new chat id gets its own lane; the row is resent there
                return True
            case Deactivate(reason=reason):
                self._deactivate(row.chat_id, reason)
                return True
            case Hold(reason=reason):
                return self._held_by_restriction(row, reason)
            case Misconfigured(reason=reason, hint=hint):
                # A wrong bot token (401) or API address (404) is a configuration problem, not this message's:
                # keep everything queued, pause all sending, and try again later.
                log.error("telegram.misconfigured", error=reason, hint=f"check {hint}")
                until = self.clock() + MAX_BACKOFF
                self.pacing.pause_all(until)
                self.store.outbox.mark_retry(row.id, not_before=until, reason=f"telegram: {reason} (check {hint})",
                                      count_attempt=False)
                self.notices.once("misconfigured", 0, notices.misconfigured(reason, hint))
                return False
            case GiveUp(reason=reason):
                return self._give_up(row, reason)
            case Retry(reason=reason):
                return self._backoff(row, reason)
        raise AssertionError(f"no way to settle {verdict!r}")  # Done, EditGone, Crash, StoreRefused: handled above

    def _rate_limited(self, row: OutboxItem, seconds: float) -> bool:
        """429: wait what Telegram asks (plus jitter) for this chat — or for all when several chats got it —
        without counting an attempt. A very long wait is reported to the admins once."""
        self.rate_limited += 1
        until = self.clock() + timedelta(seconds=seconds + random.uniform(0.1, 1.0))
        if self.pacing.rate_limited(row.chat_id, until):
            log.warning("telegram.global_pause", seconds=seconds)
        self.store.outbox.mark_retry(row.id, not_before=until, reason=f"429: retry after {seconds} s", count_attempt=False)
        long_wait = seconds >= self.long_wait_alert
        (log.warning if long_wait else log.info)("telegram.retry_after", seconds=seconds)
        if long_wait:
            self.notices.once("long_wait", row.chat_id, notices.long_wait(row.chat_id, seconds))
        return False

    def _restricted_chats(self) -> dict[int, datetime]:
        if self._restricted is None:
            self._restricted = self.store.chats.restricted_chats()
        return self._restricted

    def _held_by_restriction(self, row: OutboxItem, text: str) -> bool:
        """The chat does not let the bot write for now: hold its messages (order kept, no attempt counted) and try
        again later and later; after `restricted_hold` give the chat up like a dead one, with the reason."""
        now, chat_id = self.clock(), row.chat_id
        restricted = self._restricted_chats()
        since = restricted.get(chat_id)
        if since is None:
            since = restricted[chat_id] = now
            self.store.chats.set_restricted_since(chat_id, now)
        retry_at = restriction_retry(since, now, hold=self.restricted_hold, first=self.restricted_first_retry,
                                     cap=self.restricted_max_retry)
        if retry_at is None:
            del restricted[chat_id]
            self.store.chats.set_restricted_since(chat_id, None)
            hours = self.restricted_hold.total_seconds() / 3600
            self._deactivate(chat_id, f"{text} (still after {hours:g} h of retries)")
            return True
        self.pacing.pause(chat_id, retry_at)
        self.store.outbox.mark_retry(row.id, not_before=retry_at, reason=f"restricted: {text}", count_attempt=False)
        log.warning("telegram.chat_restricted", error=text, since=since.isoformat(),
                    retry_in_s=round((retry_at - now).total_seconds(), 1))
        self.notices.once("restricted", chat_id, notices.restricted(chat_id, text, self.restricted_hold))
        return False

    def _backoff(self, row: OutboxItem, reason: str) -> bool:
        """A transient failure: retry this row later (exponential, with jitter); the chat's later rows wait too."""
        delay = backoff_seconds(row.attempts)
        until = self.clock() + timedelta(seconds=delay)
        self.pacing.pause(row.chat_id, until)
        self.store.outbox.mark_retry(row.id, not_before=until, reason=reason)
        self.retried += 1
        log.warning("telegram.retry", attempt=row.attempts + 1, delay=round(delay, 2), reason=reason)
        if row.attempts + 1 >= STUCK_NOTICE_ATTEMPTS:
            self.notices.once("stuck", row.chat_id, notices.stuck(row.chat_id, reason))
        return False

    def _give_up(self, row: OutboxItem, reason: str) -> bool:
        self.store.outbox.mark_failed(row.id, reason, self.clock())
        self.failed += 1
        log.error("telegram.gave_up", reason=reason)
        self.notices.once(f"gave_up:{reason[:80]}", row.chat_id, notices.gave_up(row.chat_id, reason))
        return True

    def _deactivate(self, chat_id: int, reason: str) -> None:
        now = self.clock()
        self.failed += self.store.outbox.fail_pending_for_chat(chat_id, f"chat inactive: {reason}", now)
        if self.store.chats.set_chat_active(chat_id, False, reason, now):
            log.warning("telegram.chat_deactivated", reason=reason)
            self.notices.tell(notices.deactivated(chat_id, reason))

    # ── admins ───────────────────────────────────────────────────────────────────────────────────────────────

    async def notices_sent(self) -> None:
        """Wait until the admin notices under way have gone out (tests, benchmarks)."""
        await self.notices.sent()

    async def tell_admins(self, text: str) -> None:
        """Best effort, rate-limited like everything else: a problem report must never take the sender down."""
        text = redact(text)  # notices quote Planfix and Telegram error texts: no secret may reach a chat
        for admin in self.admin_ids:
            try:
                await self.transmitter.tell(admin, text)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("telegram.admin_notice_failed", admin=admin, error=str(exc))
