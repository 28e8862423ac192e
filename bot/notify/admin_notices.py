"""Delivery problems told to the admins: each kind once per chat, notices raised together batched into one message."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from bot.notify.markup import MESSAGE_LIMIT, escape, truncate, utf16_len
from bot.notify.transmit import plain_text
from bot.redact import redact

NOTICE_BATCH_SECONDS = 0.5  # admin notices raised within this time go out as one message
REASON_LIMIT = 300


def reason(text: str) -> str:
    """A Telegram or network error for an admin notice: redacted, then one line, bounded, escaped."""
    return escape(truncate(" ".join(redact(text).split()), REASON_LIMIT))


def pack(notices: Sequence[str], limit: int) -> list[str]:
    """Notices joined by blank lines into as few messages as fit Telegram's limit (each notice is short)."""
    messages: list[str] = []
    for notice in notices:
        if messages and utf16_len(plain_text(messages[-1] + "\n\n" + notice)) <= limit:
            messages[-1] += "\n\n" + notice
        else:
            messages.append(notice)
    return messages


# ── the texts ────────────────────────────────────────────────────────────────────────────────────────────────


def long_wait(chat_id: int, seconds: float) -> str:
    return (f"⏳ Telegram asks the bot to wait {int(seconds)} s before writing to chat {chat_id} again "
            "(too many requests). Messages for it are kept and will go out after the wait.")


def restricted(chat_id: int, error: str, hold: timedelta) -> str:
    return (f"⏸ Chat {chat_id} does not let the bot write right now: {reason(error)}. Its messages are held and "
            f"retried, less and less often, for up to {hold.total_seconds() / 3600:g} h; then they are given up.")


def stuck(chat_id: int, error: str) -> str:
    return f"⚠️ Messages to chat {chat_id} are delayed: {reason(error)}. The bot keeps retrying."


def gave_up(chat_id: int, error: str) -> str:
    return f"⚠️ A notification for chat {chat_id} could not be delivered and was given up: {reason(error)}"


def deactivated(chat_id: int, error: str) -> str:
    return (f"⚠️ Chat {chat_id} no longer accepts messages: {reason(error)}. "
            "Nothing more is sent there until someone sends /start in it.")


def misconfigured(error: str, hint: str) -> str:
    return f"⚠️ Telegram refuses the bot: {reason(error)} (check {hint}). Messages are kept until it is fixed."


def store_refused(error: str) -> str:
    return (f"⚠️ The bot cannot write its state file: {reason(error)}. Sending and Planfix polling are paused so "
            "that nothing is sent twice; they resume by themselves once the file can be written again (free disk "
            "space, check that it is not read-only).")


@dataclass
class AdminNotices:
    """Tells the admins in the background — the admin chat's own pacing must not hold up the lane that found the
    problem — and folds notices raised together (six chats gone at once) into one message."""

    send: Callable[[str], Awaitable[None]]  # to every admin, best effort
    batch_seconds: float = NOTICE_BATCH_SECONDS
    _told: set[tuple[str, int]] = field(default_factory=set)  # (kind of notice, chat) the admins already heard
    _lines: list[str] = field(default_factory=list)  # notices waiting to be sent together
    _task: asyncio.Task[None] | None = None

    def once(self, kind: str, chat_id: int, text: str) -> None:
        """Tell the admins `text` unless they already heard this kind of notice about this chat."""
        if (kind, chat_id) in self._told:
            return
        self._told.add((kind, chat_id))
        self.tell(text)

    def over(self, chat_id: int, *kinds: str) -> None:
        """The problem is over: the next occurrence is told again."""
        for kind in kinds:
            self._told.discard((kind, chat_id))

    def tell(self, text: str) -> None:
        self._lines.append(text)
        if self._task is None or self._task.done():
            # In a fresh context: the lane that raised the notice must not lend its log context to the batch.
            self._task = asyncio.create_task(self._flush(), name="admin-notices", context=contextvars.Context())

    async def _flush(self) -> None:
        while self._lines:
            await asyncio.sleep(self.batch_seconds)
            batch, self._lines = self._lines, []
            for text in pack(batch, MESSAGE_LIMIT - 96):
                await self.send(text)

    async def sent(self) -> None:
        """Wait until the notices under way have gone out (tests, benchmarks)."""
        while self._task is not None and not self._task.done():
            await asyncio.gather(self._task, return_exceptions=True)

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
