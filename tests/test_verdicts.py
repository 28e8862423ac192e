"""classify(error) → Verdict as a table: every Telegram, network and state-file error the sender meets, and its retry
schedules."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from aiogram.exceptions import (
    ClientDecodeError,
    TelegramAPIError,
    TelegramBadRequest,
    TelegramConflictError,
    TelegramEntityTooLarge,
    TelegramForbiddenError,
    TelegramMigrateToChat,
    TelegramNetworkError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.methods import SendMessage

from bot.notify.verdicts import (
    MAX_ATTEMPTS,
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
    Wait,
    backoff_seconds,
    classify,
    is_text_problem,
    restriction_retry,
)

CHAT = -100777
M = SendMessage(chat_id=CHAT, text="x")


def bad(text: str) -> TelegramBadRequest:
    return TelegramBadRequest(M, f"Bad Request: {text}")


# (error, editing, attempts the row spent, verdict)
TABLE = [
    pytest.param(TelegramRetryAfter(M, "Too Many Requests: retry after 7", 7), False, 0,
                 Wait(7.0, "429: retry after 7 s"), id="429 waits, no attempt"),
    pytest.param(TelegramMigrateToChat(M, "group migrated", -1009), False, 0, Migrate(-1009, "The group has been migrated"),
                 id="migrated group followed"),
    pytest.param(TelegramMigrateToChat(M, "group migrated", CHAT), False, 0, Retry("telegram: The group has been migrated"),
                 id="migration to itself retried, never followed"),
    pytest.param(TelegramForbiddenError(M, "Forbidden: bot was blocked by the user"), False, 0,
                 Deactivate("Forbidden: bot was blocked by the user"), id="403 deactivates"),
    pytest.param(bad("chat not found"), False, 0, Deactivate("Bad Request: chat not found"),
                 id="chat not found deactivates"),
    pytest.param(bad("have no rights to send a message"), False, 0,
                 Deactivate("Bad Request: have no rights to send a message"), id="no rights deactivates"),
    pytest.param(bad("not enough rights to send text messages to the chat"), False, 0,
                 Hold("Bad Request: not enough rights to send text messages to the chat"),
                 id="temporary restriction held"),
    pytest.param(bad("message is not modified: specified new message content is the same"), True, 0,
                 Done("Bad Request: message is not modified: specified new message content is the same"),
                 id="edit not modified is done"),
    pytest.param(bad("message is not modified"), False, 0, GiveUp("telegram refused: Bad Request: message is not "
                                                                   "modified"), id="not modified outside an edit"),
    pytest.param(bad("message to edit not found"), True, 0, EditGone("Bad Request: message to edit not found"),
                 id="edit of a deleted message"),
    pytest.param(bad("message can't be edited"), True, 0, EditGone("Bad Request: message can't be edited"),
                 id="edit of an old message"),
    pytest.param(bad("message to edit not found"), False, 0,
                 GiveUp("telegram refused: Bad Request: message to edit not found"), id="edit gone outside an edit"),
    pytest.param(bad("wrong file identifier"), False, 0, GiveUp("telegram refused: Bad Request: wrong file "
                                                                "identifier"), id="other 400 gives up"),
    pytest.param(TelegramUnauthorizedError(M, "Unauthorized"), False, 0, Misconfigured("Unauthorized", "telegram.token"),
                 id="401 is the token"),
    pytest.param(TelegramNotFound(M, "Not Found"), False, 0, Misconfigured("Not Found", "telegram.api_base"),
                 id="404 is the address"),
    pytest.param(TelegramNetworkError(M, "connection reset"), False, 9,
                 Retry("transient: TelegramNetworkError: "), id="network error retried forever"),
    pytest.param(TelegramServerError(M, "Bad Gateway"), False, 9, Retry("transient: TelegramServerError: "),
                 id="5xx retried forever"),
    pytest.param(TimeoutError("slow"), False, 9, Retry("transient: TimeoutError: slow"), id="timeout retried"),
    pytest.param(ConnectionResetError("reset"), False, 0, Retry("transient: ConnectionResetError: reset"),
                 id="OSError retried"),
    pytest.param(ClientDecodeError("bad json", ValueError("x"), "<html>"), False, 0,
                 Retry("transient: ClientDecodeError: bad json"), id="undecodable answer retried"),
    pytest.param(TelegramConflictError(M, "Conflict"), False, 0, Retry("telegram: Conflict"),
                 id="other API error retried"),
    pytest.param(TelegramConflictError(M, "Conflict"), False, MAX_ATTEMPTS - 1, GiveUp("telegram: Conflict"),
                 id="other API error given up after attempts"),
    pytest.param(TelegramEntityTooLarge(M, "Request Entity Too Large"), False, 9,
                 Retry("transient: TelegramEntityTooLarge: "), id="aiogram's too-large is a network error"),
    pytest.param(TelegramAPIError(M, "odd"), False, MAX_ATTEMPTS - 2, Retry("telegram: odd"),
                 id="one attempt short of giving up"),
    pytest.param(sqlite3.OperationalError("database or disk is full"), False, 0,
                 StoreRefused("database or disk is full"), id="full disk refuses the write"),
    pytest.param(sqlite3.OperationalError("attempt to write a readonly database"), False, 0,
                 StoreRefused("attempt to write a readonly database"), id="read-only file refuses the write"),
    pytest.param(sqlite3.IntegrityError("UNIQUE constraint failed"), False, 0,
                 Crash("state file: IntegrityError: UNIQUE constraint failed"), id="our SQL crashes the lane"),
    pytest.param(ValueError("bad payload"), False, 0, Retry("internal error: ValueError: bad payload", internal=True),
                 id="a bug costs an attempt"),
    pytest.param(ValueError("bad payload"), False, MAX_ATTEMPTS - 1,
                 GiveUp("internal error: ValueError: bad payload", internal=True), id="a bug gives the row up"),
]


@pytest.mark.parametrize(("error", "editing", "attempts", "verdict"), TABLE)
def test_classify(error, editing, attempts, verdict):
    """Each error gets the verdict the sender's failure policy (TELEGRAM.md §2) gives it (a reason in the table is
    the start of the reason given: aiogram adds its own words to some errors' texts)."""
    got = classify(error, chat_id=CHAT, attempts=attempts, editing=editing)
    assert type(got) is type(verdict), got
    for name, want in vars(verdict).items():
        have = getattr(got, name)
        assert have.startswith(want) if isinstance(want, str) else have == want, (name, have)


def test_any_state_file_error_while_the_file_is_failing_is_a_refused_write():
    """While the state file is known to refuse writes, any sqlite error is that refusal, not a bug."""
    error = sqlite3.IntegrityError("constraint")
    assert classify(error, chat_id=CHAT, store_failing=True) == StoreRefused("constraint")


@pytest.mark.parametrize(("text", "expected"), [
    ("Bad Request: can't parse entities: unclosed tag", True),
    ("Bad Request: message is too long", True),
    ("Bad Request: text must be non-empty", True),
    ("Bad Request: chat not found", False),
])
def test_text_problems_are_told_apart(text, expected):
    """Refusals of the text itself send the same content in a plainer form instead of a verdict."""
    assert is_text_problem(text) is expected


def test_backoff_doubles_to_ten_minutes():
    """Transient failures wait 1, 2, 4 … s, at most 10 minutes, ±25 % jitter."""
    assert [backoff_seconds(n, jitter=1.0) for n in (0, 1, 2, 5)] == [1, 2, 4, 32]
    assert backoff_seconds(30, jitter=1.0) == 600
    assert 0.75 <= backoff_seconds(0) <= 1.25


def test_a_restriction_is_retried_later_and_later_then_given_up():
    """1 min, then the time restricted so far, at most hourly, the last try at the hold's end, then None."""
    since = datetime(2026, 1, 1, tzinfo=UTC)
    assert restriction_retry(since, since) == since + timedelta(minutes=1)
    at = since + timedelta(minutes=10)
    assert restriction_retry(since, at) == at + timedelta(minutes=10)
    at = since + timedelta(hours=5)
    assert restriction_retry(since, at) == at + timedelta(hours=1)
    at = since + timedelta(hours=23, minutes=30)
    assert restriction_retry(since, at) == since + timedelta(hours=24)
    assert restriction_retry(since, since + timedelta(hours=24)) is None
