"""What the watcher detects and the notifier announces: one change of one task, with a stable identity."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


class Kind(StrEnum):
    """Event kinds; the values are the contract's event names (DESIGN.md §3), stored and used in `events` lists."""

    STATUS = "status"
    DEADLINE = "deadline"
    OVERDUE = "overdue"
    REMINDER = "reminder"  # the deadline is near; routes opt in
    ASSIGNED = "assigned"  # a user became an assignee; personal to them
    COMMENT = "comment"  # someone commented; personal to the other participants, routes opt in
    DIGEST = "digest"  # many events for one chat folded into one message
    DAILY = "daily"  # the daily digest of one chat


STATUS, DEADLINE, OVERDUE, REMINDER = Kind.STATUS, Kind.DEADLINE, Kind.OVERDUE, Kind.REMINDER
ASSIGNED, COMMENT, DIGEST, DAILY = Kind.ASSIGNED, Kind.COMMENT, Kind.DIGEST, Kind.DAILY
EVENT_KINDS = (STATUS, DEADLINE, OVERDUE)  # the contract's three kinds (DESIGN.md §3); routes default to these


# ── payloads: what each kind says, typed ────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class StatusMove:
    """Status ids, named at send time in the chat's language; the names seen at detection are the fallback (an id
    Planfix no longer lists, or a row stored by an older release, which kept only names)."""

    old: int | None
    new: int | None
    old_name: str = ""
    new_name: str = ""


@dataclass(frozen=True)
class DeadlineMove:
    """Deadline values as `Deadline.to_json()` (`YYYY-MM-DD` date-only, ISO-8601 with offset otherwise); None =
    unset."""

    old: str | None
    new: str | None


@dataclass(frozen=True)
class Overdue:
    deadline: str | None  # the deadline that passed (Deadline.to_json())


@dataclass(frozen=True)
class Reminder:
    lead: str  # the configured lead time, "24h"
    deadline: str | None


@dataclass(frozen=True)
class Assigned:
    user_id: int | None  # the new assignee's Planfix id
    name: str


@dataclass(frozen=True)
class Comment:
    text: str  # Planfix HTML, cut; converted to Telegram HTML at send time; the author is the event's actor
    files: tuple[str, ...] = ()  # names of the attached files


@dataclass(frozen=True)
class Digest:
    """Events folded into one message (`items`: each Event.to_json(), oldest first). `why`: catch-up or burst;
    a burst too long for one message is split into `parts`, each counting the whole (`total`)."""

    why: str
    items: tuple[dict[str, Any], ...] = ()
    part: int = 1
    parts: int = 1
    total: int | None = None


@dataclass(frozen=True)
class Daily:
    """The daily digest of one chat: its local day (ISO date), its time zone, the tasks due that day and overdue."""

    day: str
    zone: str
    items: tuple[dict[str, Any], ...] = ()


Payload = StatusMove | DeadlineMove | Overdue | Reminder | Assigned | Comment | Digest | Daily
PAYLOADS: dict[Kind, type] = {
    STATUS: StatusMove, DEADLINE: DeadlineMove, OVERDUE: Overdue, REMINDER: Reminder, ASSIGNED: Assigned,
    COMMENT: Comment, DIGEST: Digest, DAILY: Daily,
}
_TUPLES = ("items", "files")


@dataclass(frozen=True)
class Event:
    """A detected change. `key` is its idempotency identity: the same change detected twice has the same key.
    `payload` says what changed, one type per kind (PAYLOADS); digests have task_id 0."""

    kind: Kind
    key: str
    task_id: int
    task_general: int
    task_title: str
    occurred_at: datetime
    payload: Payload | None = None
    project_id: int | None = None
    project_title: str | None = None
    importance: str = "AVERAGE"
    actor_id: int | None = None
    actor_name: str | None = None
    participants: tuple[int, ...] = ()  # Planfix user ids taking part in the task, for personal routing
    action_id: int | None = None  # the Planfix action that made the change, if known (our own writes are skipped)

    @property
    def coalesces(self) -> bool:
        """Whether a later change of the same task may join this message (digests stand alone)."""
        return self.kind not in (DIGEST, DAILY)

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["kind"] = str(self.kind)
        data["occurred_at"] = self.occurred_at.isoformat()
        data["participants"] = list(self.participants)
        data["payload"] = _payload_json(self.payload)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Event:
        """Reads rows of this release and of earlier ones (whose `old_value`/`new_value`/`subject_id`/`items`
        meant something different for each kind)."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["kind"] = Kind(values["kind"])
        values["occurred_at"] = datetime.fromisoformat(values["occurred_at"])
        values["participants"] = tuple(values.get("participants") or ())
        raw = data.get("payload")
        if isinstance(raw, dict):
            values["payload"] = _payload_from(values["kind"], raw)
        else:
            values["payload"] = legacy_payload(values["kind"], data)
        return cls(**values)


def _payload_json(payload: Payload | None) -> dict[str, Any] | None:
    if payload is None:
        return None
    data = {f.name: getattr(payload, f.name) for f in dataclasses.fields(payload)}
    for name in _TUPLES:
        if name in data:
            data[name] = list(data[name])
    return data


def _payload_from(kind: Kind, raw: dict[str, Any]) -> Payload:
    cls = PAYLOADS[kind]
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in raw.items() if k in names}
    for name in _TUPLES:
        if name in values:
            values[name] = tuple(values[name] or ())
    return cls(**values)


def legacy_payload(kind: Kind, data: dict[str, Any]) -> Payload:
    """A row written before payloads (test_upgrade.py keeps one): the old bag of fields, read per kind."""
    old, new = data.get("old_value"), data.get("new_value")
    match kind:
        case Kind.STATUS:
            return StatusMove(None, None, old or "", new or "")
        case Kind.DEADLINE:
            return DeadlineMove(old, new)
        case Kind.OVERDUE:
            return Overdue(new or old)
        case Kind.REMINDER:
            return Reminder(old or "", new)
        case Kind.ASSIGNED:
            return Assigned(data.get("subject_id"), new or "")
        case Kind.COMMENT:
            return Comment(new or "", tuple(data.get("files") or ()))
        case Kind.DIGEST:
            why, part, whole = ((old or "").split(":") + ["", ""])[:3]
            number, _, parts = part.partition("/")
            return Digest(why, tuple(data.get("items") or ()), int(number) if number.isdigit() else 1,
                          int(parts) if parts.isdigit() else 1, int(whole) if whole.isdigit() else None)
        case Kind.DAILY:
            return Daily(old or "", new or "", tuple(data.get("items") or ()))
