"""What a failed delivery means: one pure `classify(error) → Verdict` for every Telegram, network and state-file error."""

from __future__ import annotations

import random
import re
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta

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

from state.health import is_write_failure

MAX_ATTEMPTS = 5  # for failures that are neither clearly transient nor clearly permanent
MAX_BACKOFF = timedelta(minutes=10)
# A restricted group's messages are held and retried, less and less often, for RESTRICTED_HOLD; only then is the
# chat given up.
RESTRICTED_HOLD = timedelta(hours=24)
RESTRICTED_FIRST_RETRY = 60.0  # seconds; then the time restricted so far (doubling), at most RESTRICTED_MAX_RETRY
RESTRICTED_MAX_RETRY = 3600.0

# 400 "not enough rights to send text messages to the chat": a group restricted the bot, often for a while.
_RESTRICTED = re.compile(r"not enough rights to send", re.IGNORECASE)
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
_NOT_MODIFIED = re.compile(r"message is not modified", re.IGNORECASE)
_TRANSIENT = (TelegramNetworkError, TelegramServerError, ClientDecodeError, TimeoutError, OSError)


@dataclass(frozen=True)
class Done:
    """The chat already shows this message ("message is not modified" on an edit): record it as sent."""

    reason: str


@dataclass(frozen=True)
class Retry:
    """A transient failure: retry the row later with back-off (counts an attempt); `internal` = our own bug."""

    reason: str
    internal: bool = False


@dataclass(frozen=True)
class Wait:
    """429: wait `seconds` as Telegram asks, without counting an attempt."""

    seconds: float
    reason: str = "429"


@dataclass(frozen=True)
class Hold:
    """The group restricts the bot for now: hold its messages and retry less and less often, then give up."""

    reason: str


@dataclass(frozen=True)
class Deactivate:
    """The chat takes no more messages from us (blocked, kicked, not found): mark it inactive."""

    reason: str


@dataclass(frozen=True)
class Migrate:
    """The group became a supergroup: follow it to its new id and resend there."""

    new_chat_id: int
    reason: str = "migrated"


@dataclass(frozen=True)
class EditGone:
    """The message to update was deleted or is too old to edit: send a new message instead."""

    reason: str


@dataclass(frozen=True)
class GiveUp:
    """Telegram refuses this message for good (or it failed too often): settle the row as failed."""

    reason: str
    internal: bool = False


@dataclass(frozen=True)
class Misconfigured:
    """401/404: a wrong bot token or API address, nobody's message at fault: keep everything, pause all sending."""

    reason: str
    hint: str  # the config key to check


@dataclass(frozen=True)
class StoreRefused:
    """The state file refused a write: nothing was lost, but nothing more is sent until it takes writes again."""

    reason: str


@dataclass(frozen=True)
class Crash:
    """A state-file error that is not the host's refusal (our SQL): let the lane fail, the chat pauses briefly."""

    reason: str


Verdict = Done | Retry | Wait | Hold | Deactivate | Migrate | EditGone | GiveUp | Misconfigured | StoreRefused | Crash


def is_text_problem(description: str) -> bool:
    """Telegram refused our text itself (markup, length): the same content goes out as plain text or cut."""
    return bool(_TEXT_PROBLEM.search(description))


def classify(error: BaseException, *, chat_id: int, attempts: int = 0, editing: bool = False,
             store_failing: bool = False) -> Verdict:
    """The verdict for an error raised while delivering one outbox row to `chat_id` (TELEGRAM.md §2); `attempts`
    is what the row spent already, `editing` whether the request edited a message in place."""
    if isinstance(error, TelegramRetryAfter):
        return Wait(float(error.retry_after), f"429: retry after {error.retry_after} s")
    if isinstance(error, TelegramMigrateToChat):
        if error.migrate_to_chat_id == chat_id:  # nonsense, and following it would settle the row unsent
            return Retry(f"telegram: {error.message}")
        return Migrate(error.migrate_to_chat_id, error.message)
    if isinstance(error, TelegramForbiddenError):
        return Deactivate(error.message)
    if isinstance(error, TelegramBadRequest):
        text = error.message
        if editing and _NOT_MODIFIED.search(text):
            return Done(text)
        if editing and _EDIT_GONE.search(text):
            return EditGone(text)
        if _RESTRICTED.search(text):
            return Hold(text)
        if _DEAD_CHAT.search(text):
            return Deactivate(text)
        return GiveUp(f"telegram refused: {text}")
    if isinstance(error, (TelegramUnauthorizedError, TelegramNotFound)):
        hint = "telegram.token" if isinstance(error, TelegramUnauthorizedError) else "telegram.api_base"
        return Misconfigured(error.message, hint)
    if isinstance(error, _TRANSIENT):
        return Retry(f"transient: {type(error).__name__}: {error}")
    if isinstance(error, TelegramAPIError):
        return _retry_or_give_up(f"telegram: {error.message}", attempts)
    if isinstance(error, sqlite3.Error):
        if is_write_failure(error) or store_failing:
            return StoreRefused(str(error))
        return Crash(f"state file: {type(error).__name__}: {error}")
    return _retry_or_give_up(f"internal error: {type(error).__name__}: {error}", attempts, internal=True)


def _retry_or_give_up(reason: str, attempts: int, *, internal: bool = False) -> Retry | GiveUp:
    """Neither clearly transient nor clearly permanent: a few attempts, then the row is given up."""
    if attempts + 1 >= MAX_ATTEMPTS:
        return GiveUp(reason, internal=internal)
    return Retry(reason, internal=internal)


def backoff_seconds(attempts: int, *, jitter: float | None = None) -> float:
    """How long a row waits after its `attempts`-th transient failure: 1, 2, 4, … s, at most MAX_BACKOFF, ±25 %."""
    factor = random.uniform(0.75, 1.25) if jitter is None else jitter
    return min(MAX_BACKOFF.total_seconds(), 2 ** min(attempts, 12)) * factor


def restriction_retry(since: datetime, now: datetime, *, hold: timedelta = RESTRICTED_HOLD,
                      first: float = RESTRICTED_FIRST_RETRY, cap: float = RESTRICTED_MAX_RETRY) -> datetime | None:
    """When to try a chat that restricts the bot again (1 min, 2, 4, … then hourly; the last try at the bound),
    or None: restricted for `hold` already, give up."""
    if now - since >= hold:
        return None
    delay = min(cap, max(first, (now - since).total_seconds()))
    return min(now + timedelta(seconds=delay), since + hold)
