"""Inline-button data: aiogram CallbackData factories with versioned prefixes.

Callback data comes back from Telegram as text anyone can forge, so it only ever *names* what to do; every press
is checked again like a typed command (the presser must be allowed to see the task, to change the chat, to page
that list). Data that does not parse, or carries an older prefix, matches no factory and gets "out of date".
Bump the version digit of a prefix whenever its fields change.
"""

from __future__ import annotations

from enum import StrEnum

from aiogram.filters.callback_data import CallbackData
from pydantic import Field

# Out-of-range numbers fail to parse like any other forged data (and never reach SQLite as a 64-bit overflow).
MAX_NUMBER = 999_999_999_999  # task numbers: /task accepts at most 12 digits too
MAX_PAGE = 100_000
MAX_ID = 2**53  # Telegram user ids and saved-query ids


class TaskAct(StrEnum):
    REFRESH = "r"
    FOLLOW = "f"
    UNFOLLOW = "u"
    SNOOZE = "z"


class TaskButton(CallbackData, prefix="t1"):
    """A button under a /task card: what to do, and the task number (re-checked on every press)."""

    act: TaskAct
    number: int = Field(ge=1, le=MAX_NUMBER)


class ListKind(StrEnum):
    MY = "my"
    TODAY = "today"
    OVERDUE = "overdue"
    FIND = "find"


class ListPage(CallbackData, prefix="l1"):
    """◀ ▶ under a list: which list, which page, who asked (only they may page it), and for /find the id of the
    saved query (its words stay in the state file, not in the 64-byte button)."""

    kind: ListKind
    page: int = Field(ge=0, le=MAX_PAGE)
    owner: int = Field(ge=1, le=MAX_ID)
    query: int = Field(default=0, ge=0, le=MAX_ID)


class StatusAct(StrEnum):
    MENU = "m"  # show the statuses of the task's process under the message
    SET = "s"  # change to `status`
    CLOSE = "x"  # hide the statuses again


class StatusButton(CallbackData, prefix="a1"):
    """Status ▸ under a card or a personal notice: the task number and, for SET, the status id. Like every
    button, re-checked on every press: the presser must be allowed to see (and so to act on) the task."""

    act: StatusAct
    number: int = Field(ge=1, le=MAX_NUMBER)
    status: int = Field(default=0, ge=0, le=MAX_ID)
