"""Typed views of Planfix API objects, as parsed from XML responses."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class PersonRef:
    """A user (or group) referenced from a task or action: id and display name."""

    id: int
    name: str


@dataclass(frozen=True)
class ProjectRef:
    id: int
    title: str


@dataclass(frozen=True)
class Deadline:
    """A task deadline. `due` is the aware instant it falls due; date-only deadlines are due at the end of that
    day in the API user's time zone, and `date_only` remembers that for display."""

    due: datetime
    date_only: bool = False

    @property
    def local_date(self) -> date:
        return self.due.date()

    def to_json(self) -> str:
        """Stable text form: `YYYY-MM-DD` for date-only (calendar date in the API zone), ISO-8601 otherwise."""
        return self.due.date().isoformat() if self.date_only else self.due.isoformat()


@dataclass(frozen=True)
class Task:
    """A task card from task.get / task.getMulti / task.getList (the last has no members/auditors)."""

    id: int  # internal id
    general: int  # the human-visible task number, used in links
    title: str
    description: str = ""  # Planfix HTML, XML-unescaped once (may still hold HTML entities)
    importance: str = "AVERAGE"  # AVERAGE | HIGH
    status: int = 0  # numeric status id
    status_set: int | None = None
    owner: PersonRef | None = None
    project: ProjectRef | None = None
    deadline: Deadline | None = None
    begin: datetime | None = None
    workers: tuple[PersonRef, ...] = ()  # assignee users
    worker_groups: tuple[PersonRef, ...] = ()
    members: tuple[PersonRef, ...] = ()
    auditors: tuple[PersonRef, ...] = ()
    is_overdue: bool = False

    def participant_ids(self) -> frozenset[int]:
        """Planfix user ids taking part in the task: owner, assignees, participants, auditors."""
        ids = {p.id for p in (*self.workers, *self.members, *self.auditors)}
        if self.owner:
            ids.add(self.owner.id)
        ids.discard(0)
        return frozenset(ids)


@dataclass(frozen=True)
class StatusChange:
    old: int
    new: int


@dataclass(frozen=True)
class DateChange:
    old: Deadline | None
    new: Deadline | None


@dataclass(frozen=True)
class Action:
    """One entry of a task's history (comment, status change, system event) from action.get*/getListByPeriod."""

    id: int
    type: str  # ACTION, COMMENT, STATUSCHANGED, TASKOVERDUED, ... (PLANFIX-API.md §6.3)
    task_id: int  # internal id, not `general`
    at: datetime
    task_title: str = ""
    description: str = ""
    owner: PersonRef | None = None  # the author
    project: ProjectRef | None = None
    status_change: StatusChange | None = None
    deadline_change: DateChange | None = None  # from <taskExpectDateChanged>
    files: tuple[str, ...] = ()  # names of the files attached to it (<files><file><name>)


@dataclass(frozen=True)
class User:
    id: int
    name: str
    general: int | None = None
    last_name: str = ""
    login: str = ""
    email: str = ""
    role: str = ""  # ADMIN | USER | TECHADMIN
    status: str = ""  # ACTIVE | UNACTIVE
    timezone: str | None = None  # IANA name
    telegram_id: str | None = None
    user_pic: str = ""  # the avatar URL: served from the account's web address (tells .planfix.ru from .com)

    @property
    def full_name(self) -> str:
        return f"{self.name} {self.last_name}".strip()


@dataclass(frozen=True)
class Status:
    """A task status of one process (status set); names come from taskStatus.getListOfSet."""

    id: int
    name: str
    set_id: int | None = None
    is_active: bool = True
    has_deadline: bool = True
    names: dict[str, str] = field(default_factory=dict, hash=False, compare=False)  # lang ("ru"/"en") -> name

    def name_in(self, lang: str) -> str:
        return self.names.get(lang.lower()) or self.name


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list method: the items and the `count`/`totalCount` attributes of the list root."""

    items: list[T]
    count: int
    total_count: int | None = None
    skipped: list[str] = field(default_factory=list)  # why each malformed item of the page was left out

    @property
    def rows(self) -> int:
        """Items the page held, malformed ones included: what decides whether the page was full."""
        return len(self.items) + len(self.skipped)


@dataclass(frozen=True)
class StatusSet:
    """A task process ("status set") from taskStatus.getSetList; its statuses come from getListOfSet."""

    id: int
    name: str
