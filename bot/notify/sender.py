"""The sender: drains the outbox through Telegram, rate-limited, and classifies every failure."""

from __future__ import annotations

import asyncio
import html
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import structlog
from aiogram import Bot
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramMigrateToChat,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup, LinkPreviewOptions
from aiolimiter import AsyncLimiter

from bot.events import Event
from state.records import OutboxItem
from state.store import Store

log = structlog.get_logger(__name__)

# Telegram's published guidance: ~30 messages/s overall, ~1/s per chat, 20/min per group. Stay under it.
GLOBAL_PER_SECOND = 25
GROUP_PER_MINUTE = 20
MAX_BACKOFF = timedelta(minutes=10)
MAX_ATTEMPTS = 20  # for errors that are neither clearly transient nor clearly permanent
LONG_WAIT_SECONDS = 300

# 400 descriptions that mean "this chat will not take messages from us" (TELEGRAM.md §2).
_DEAD_CHAT = re.compile(
    r"chat not found|have no rights|not enough rights|chat_write_forbidden|bot was kicked|"
    r"bot is not a member|user is deactivated|peer_id_invalid|group chat was deactivated",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Rendered:
    """A message ready to send: HTML text, a short fallback, and the task link for the button."""

    html: str
    fallback_html: str
    url: str | None
    silent: bool = False


def plain_text(html_text: str) -> str:
    """The same content without markup, for when Telegram refuses to parse our HTML."""
    return html.unescape(re.sub(r"<[^>]*>", "", html_text))


@dataclass
class Sender:
    bot: Bot
    store: Store
    render: Callable[[Event, int], Rendered]
    admin_ids: Sequence[int] = ()
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    open_button_text: Callable[[int], str] = lambda chat_id: "Open in Planfix"
    batch_size: int = 50
    idle_wait: float = 5.0
    sent: int = 0
    failed: int = 0
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _stopping: bool = False
    _global: AsyncLimiter = field(default_factory=lambda: AsyncLimiter(GLOBAL_PER_SECOND, 1))
    _per_chat: dict[int, AsyncLimiter] = field(default_factory=dict)

    def wake(self, *_: object) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Send until stopped. A stop lets the in-flight send finish; nothing pending is lost."""
        log.info("sender.started")
        while not self._stopping:
            try:
                progressed = await self.drain_once()
            except Exception:
                log.exception("sender.loop_error")
                progressed = False
            if progressed or self._stopping:
                continue
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self._idle_timeout())
            except TimeoutError:
                pass
        log.info("sender.stopped", sent=self.sent, failed=self.failed)

    def _idle_timeout(self) -> float:
        nxt = self.store.next_outbox_time()
        if nxt is None:
            return self.idle_wait
        return min(self.idle_wait, max(0.05, (nxt - self.clock()).total_seconds()))

    def _chat_limiter(self, chat_id: int) -> AsyncLimiter:
        if chat_id not in self._per_chat:
            # Negative ids are groups and channels: 20 per minute. Private chats: one per second.
            self._per_chat[chat_id] = AsyncLimiter(GROUP_PER_MINUTE, 60) if chat_id < 0 else AsyncLimiter(1, 1)
        return self._per_chat[chat_id]

    async def drain_once(self) -> bool:
        """Try every due row once; returns whether anything was delivered or settled."""
        rows = self.store.due_outbox(self.clock(), self.batch_size)
        progressed = False
        held: set[int] = set()  # chats that must wait: later rows keep their order behind the first
        for row in rows:
            if self._stopping:
                break
            if row.chat_id in held:
                continue
            limiter = self._chat_limiter(row.chat_id)
            if not limiter.has_capacity():
                held.add(row.chat_id)
                continue
            async with self._global:
                await limiter.acquire()
                settled = await self.deliver(row)
            progressed |= settled
            if not settled:
                held.add(row.chat_id)
        return progressed

    async def deliver(self, row: OutboxItem) -> bool:
        """Send one outbox row; returns True when the row is settled (delivered or given up)."""
        now = self.clock()
        chat = self.store.chat(row.chat_id)
        if chat is not None and not chat.active:
            self.store.mark_failed(row.id, f"chat inactive: {chat.reason}", now)
            self.failed += 1
            return True
        event = Event.from_json(row.payload)
        rendered = self.render(event, row.chat_id)
        try:
            message_id = await self._send(row.chat_id, rendered, rendered.html, parse_html=True)
        except TelegramRetryAfter as exc:
            return self._retry_after(row, exc.retry_after)
        except TelegramMigrateToChat as exc:
            self.store.migrate_chat(row.chat_id, exc.migrate_to_chat_id, now)
            log.warning("telegram.chat_migrated", old_chat=row.chat_id, new_chat=exc.migrate_to_chat_id)
            return True
        except TelegramForbiddenError as exc:
            await self._deactivate(row, exc.message)
            return True
        except TelegramBadRequest as exc:
            return await self._bad_request(row, rendered, exc)
        except TelegramUnauthorizedError:
            # A wrong bot token is a configuration problem; keep everything queued until it is fixed.
            log.error("telegram.unauthorized", hint="check telegram.token")
            self.store.mark_retry(row.id, not_before=now + MAX_BACKOFF, reason="telegram: unauthorized")
            return False
        except (TelegramNetworkError, TelegramServerError, TimeoutError, OSError) as exc:
            return self._backoff(row, f"transient: {type(exc).__name__}: {exc}")
        except TelegramAPIError as exc:
            if row.attempts + 1 >= MAX_ATTEMPTS:
                return self._give_up(row, f"telegram: {exc.message}")
            return self._backoff(row, f"telegram: {exc.message}")
        self.store.mark_delivered(row.id, message_id, self.clock())
        self.sent += 1
        log.info("telegram.sent", chat=row.chat_id, event_key=row.event_key, message_id=message_id)
        return True

    async def _send(self, chat_id: int, rendered: Rendered, text: str, *, parse_html: bool) -> int:
        markup = None
        if rendered.url:
            button = InlineKeyboardButton(text=self.open_button_text(chat_id), url=rendered.url)
            markup = InlineKeyboardMarkup(inline_keyboard=[[button]])
        message = await self.bot.send_message(
            chat_id,
            text,
            parse_mode="HTML" if parse_html else None,
            link_preview_options=LinkPreviewOptions(is_disabled=True),
            disable_notification=rendered.silent,
            reply_markup=markup,
        )
        return message.message_id

    async def _bad_request(self, row: OutboxItem, rendered: Rendered, exc: TelegramBadRequest) -> bool:
        text = exc.message.lower()
        if "message is not modified" in text:
            self.store.mark_delivered(row.id, row.message_id, self.clock())
            return True
        if _DEAD_CHAT.search(text):
            await self._deactivate(row, exc.message)
            return True
        if "can't parse entities" in text or "message is too long" in text or "text is empty" in text:
            # Something must always arrive: the same content as plain text, else the short form.
            for candidate, as_html in ((plain_text(rendered.html), False), (rendered.fallback_html, True)):
                try:
                    message_id = await self._send(row.chat_id, rendered, candidate[:4000], parse_html=as_html)
                except TelegramBadRequest as again:
                    log.warning("telegram.fallback_refused", chat=row.chat_id, error=again.message)
                    continue
                except TelegramAPIError as other:
                    return self._backoff(row, f"telegram: {other.message}")
                self.store.mark_delivered(row.id, message_id, self.clock())
                self.sent += 1
                log.warning("telegram.sent_fallback", chat=row.chat_id, event_key=row.event_key, error=exc.message)
                return True
        return self._give_up(row, f"telegram refused: {exc.message}")

    def _retry_after(self, row: OutboxItem, seconds: float) -> bool:
        wait = seconds + random.uniform(0, 1)
        # 429 is Telegram asking us to wait, not a failed attempt: it does not count towards giving up.
        self.store.mark_retry(
            row.id, not_before=self.clock() + timedelta(seconds=wait), reason=f"429 retry after {seconds}s",
            count_attempt=False,
        )
        level = log.warning if seconds >= LONG_WAIT_SECONDS else log.info
        level("telegram.retry_after", chat=row.chat_id, seconds=seconds)
        return False

    def _backoff(self, row: OutboxItem, reason: str) -> bool:
        delay = min(MAX_BACKOFF.total_seconds(), 2 ** min(row.attempts, 10)) * random.uniform(0.75, 1.25)
        self.store.mark_retry(row.id, not_before=self.clock() + timedelta(seconds=delay), reason=reason)
        log.warning("telegram.retry", chat=row.chat_id, event_key=row.event_key, attempt=row.attempts + 1, reason=reason)
        return False

    def _give_up(self, row: OutboxItem, reason: str) -> bool:
        self.store.mark_failed(row.id, reason, self.clock())
        self.failed += 1
        log.error("telegram.gave_up", chat=row.chat_id, event_key=row.event_key, reason=reason)
        return True

    async def _deactivate(self, row: OutboxItem, reason: str) -> None:
        now = self.clock()
        self.store.mark_failed(row.id, f"chat inactive: {reason}", now)
        self.failed += 1
        if self.store.set_chat_active(row.chat_id, False, reason, now):
            log.warning("telegram.chat_deactivated", chat=row.chat_id, reason=reason)
            await self.tell_admins(f"⚠️ Chat {row.chat_id} no longer accepts messages: {html.escape(reason)}. "
                                   "Nothing more is sent there until someone sends /start in it.")

    async def tell_admins(self, text: str) -> None:
        """Best effort: a problem report must never take the sender down with it."""
        for admin in self.admin_ids:
            try:
                await self.bot.send_message(admin, text, parse_mode="HTML")
            except TelegramAPIError as exc:
                log.warning("telegram.admin_notice_failed", admin=admin, error=exc.message)
