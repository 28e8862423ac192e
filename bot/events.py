"""What the watcher detects and the notifier announces: one change of one task, with a stable identity."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any

STATUS = "status"
DEADLINE = "deadline"
OVERDUE = "overdue"
EVENT_KINDS = (STATUS, DEADLINE, OVERDUE)  # the contract's three kinds (DESIGN.md §3); routes default to these
ASSIGNED = "assigned"  # a user became an assignee: subject_id = their Planfix id, new_value = their name; personal
COMMENT = "comment"  # someone commented: new_value = the comment's Planfix HTML (cut), `files` = attached file names;
# personal to the task's other participants, routes opt in
REMINDER = "reminder"  # the deadline is near: old_value = lead time ("24h"), new_value = the deadline
DIGEST = "digest"  # many events for one chat folded into one message: `items` holds their to_json() dicts
DAILY = "daily"  # the daily digest of one chat (issue 6): old_value = its local day, new_value = its time zone,
# `items` = the tasks due that day and overdue; task_id = -YYYYMMDD, so it never coalesces with anything else


@dataclass(frozen=True)
class Event:
    """A detected change. `key` is its idempotency identity: the same change detected twice has the same key.

    For `status`, old/new are status names. For `deadline` and `overdue`, they are `Deadline.to_json()` texts
    (`YYYY-MM-DD` for date-only deadlines, ISO-8601 with offset otherwise) or None when unset.
    """

    kind: str
    key: str
    task_id: int
    task_general: int
    task_title: str
    occurred_at: datetime
    old_value: str | None = None
    new_value: str | None = None
    project_id: int | None = None
    project_title: str | None = None
    importance: str = "AVERAGE"
    actor_id: int | None = None
    actor_name: str | None = None
    participants: tuple[int, ...] = ()  # Planfix user ids taking part in the task, for personal routing
    subject_id: int | None = None  # ASSIGNED: the Planfix user the event is about (the new assignee)
    items: tuple[dict[str, Any], ...] = ()  # only for DIGEST: the folded events, each as Event.to_json()
    action_id: int | None = None  # the Planfix action that made the change, if known (our own writes are skipped)
    files: tuple[str, ...] = ()  # only for COMMENT: names of the attached files

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["occurred_at"] = self.occurred_at.isoformat()
        data["participants"] = list(self.participants)
        data["items"] = list(self.items)
        data["files"] = list(self.files)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Event:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["occurred_at"] = datetime.fromisoformat(values["occurred_at"])
        values["participants"] = tuple(values.get("participants") or ())
        values["items"] = tuple(values.get("items") or ())
        values["files"] = tuple(str(f) for f in values.get("files") or ())
        return cls(**values)
