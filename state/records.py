"""Plain records that cross the state boundary: what callers write and what they read back."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class StoredSnapshot:
    """What is remembered about one task. `data` is the watcher's snapshot as JSON; the store copies into
    columns (read in Python, never with SQL JSON functions) `general`, `deadline` (text), `deadline_due` (epoch
    seconds), `is_active`, `overdue_for` and `title`, and its people into `task_people` (`task_columns`)."""

    task_id: int
    revision: int
    data: dict[str, Any]


WORKER = "worker"  # task_people.role: an assignee
PARTICIPANT = "participant"  # task_people.role: anyone taking part (owner, assignee, participant, auditor)


def task_columns(data: dict[str, Any]) -> tuple[str, dict[str, list[int]]]:
    """What SQL selects tasks by, read from a snapshot in Python: its title, and its people by role (the
    `task_people` rows). The only reader of those parts of the snapshot layout on the state side."""
    def ids(key: str) -> list[int]:
        return sorted({int(v) for v in data.get(key) or () if isinstance(v, int) and not isinstance(v, bool)})

    return str(data.get("title") or ""), {WORKER: ids("workers"), PARTICIPANT: ids("participants")}


@dataclass(frozen=True)
class EventRow:
    key: str
    kind: str
    task_id: int
    payload: dict[str, Any]


@dataclass(frozen=True)
class DeliveryRow:
    """One event for one chat; (event_key, chat_id) is the idempotency key of the outbox row."""

    event_key: str
    chat_id: int
    not_before: datetime | None = None


@dataclass(frozen=True)
class PollCommit:
    """Everything one poll learned, written in one transaction."""

    now: datetime
    snapshots: list[StoredSnapshot] = field(default_factory=list)
    forget_tasks: list[int] = field(default_factory=list)
    seen_actions: list[tuple[int, int, datetime]] = field(default_factory=list)  # (action id, task id, at)
    events: list[EventRow] = field(default_factory=list)
    deliveries: list[DeliveryRow] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)
    set_aside: dict[int, str] = field(default_factory=dict)  # task id → why Planfix did not show it (a code)
    readable: list[int] = field(default_factory=list)  # tasks read fine: no longer set aside


@dataclass(frozen=True)
class OutboxItem:
    id: int
    key: str
    event_key: str
    chat_id: int
    attempts: int
    payload: dict[str, Any]
    message_id: int | None = None
    created_at: datetime | None = None  # when the row was queued (coalescing measures its window from it)


@dataclass(frozen=True)
class ChatState:
    chat_id: int
    active: bool
    reason: str | None = None
