"""The pure diff: a stored task snapshot, the task as Planfix shows it now and its new actions → events."""

from __future__ import annotations

import dataclasses
import enum
import html
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.events import (
    ASSIGNED,
    COMMENT,
    DEADLINE,
    OVERDUE,
    REMINDER,
    STATUS,
    Assigned,
    Comment,
    DeadlineMove,
    Event,
    Kind,
    Overdue,
    Payload,
    Reminder,
    StatusMove,
)
from bot.planfix.models import Action, PersonRef, Status, Task

CREATED = "TASKCREATED"
# Action types a person writes (PLANFIX-API.md §6.3); the rest are Planfix's own records.
COMMENT_TYPES = frozenset({"ACTION", "COMMENT", "FILE"})
COMMENT_KEPT = 4000  # characters of a comment's HTML kept in the event: the notice shows far less
_TAGS = re.compile(r"<[^>]*>")
_PLACEHOLDERS = re.compile(r"\{[A-Za-z]+\d+\}:?")  # with its label colon, as in bot/notify/planfix_html.py


@dataclass(frozen=True)
class Snapshot:
    """What is remembered about a task between polls: just enough to diff, route and render."""

    task_id: int
    general: int
    title: str
    status: int
    status_name: str
    is_active: bool
    deadline: str | None = None  # Deadline.to_json()
    deadline_due: float | None = None  # epoch seconds when it falls due
    project_id: int | None = None
    project_title: str | None = None
    importance: str = "AVERAGE"
    participants: tuple[int, ...] = ()
    overdue_for: str | None = None  # the deadline value an overdue notice was already made for
    reminded: tuple[str, ...] = ()  # "lead@deadline": reminders made (or passed over) for the current deadline
    # Chat commands answer lists and cards from snapshots. Rows stored before these fields existed, and
    # snapshots made from task.getList items (which carry no auditors or members), simply have them empty.
    owner_id: int | None = None
    workers: tuple[int, ...] = ()  # assignee user ids
    auditors: tuple[int, ...] = ()
    worker_groups: tuple[str, ...] = ()  # names of assignee groups
    # str(user id) -> display name, for the owner, the assignees and the auditors
    names: dict[str, str] = dataclasses.field(default_factory=dict, hash=False)
    # The status's `hasDeadline` — whether Planfix tracks the deadline in it (a rejected status can be
    # active). Rows stored before it existed count as tracked, as before.
    has_deadline: bool = True

    @property
    def tracks_deadline(self) -> bool:
        """Whether this task can fall due: an active status that keeps deadlines."""
        return self.is_active and self.has_deadline

    def to_data(self) -> dict[str, Any]:
        # Field by field rather than dataclasses.asdict (a deep copy): a first start writes tens of thousands.
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in _TUPLE_FIELDS:
            data[name] = list(data[name])
        data["names"] = dict(self.names)
        return data

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Snapshot:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for name in _TUPLE_FIELDS:
            values[name] = tuple(values.get(name) or ())
        values["names"] = {str(k): str(v) for k, v in dict(values.get("names") or {}).items()}
        return cls(**values)


_TUPLE_FIELDS = ("participants", "reminded", "workers", "auditors", "worker_groups")


@dataclass(frozen=True)
class Lead:
    """A reminder lead time from `poll.remind_before`: its text as configured ("24h") and its length."""

    text: str
    length: timedelta

    @classmethod
    def parse(cls, text: str) -> Lead:
        """"30m" / "24h" / "2d" → Lead; raises ValueError otherwise."""
        units = {"m": "minutes", "h": "hours", "d": "days"}
        number, unit = text[:-1], text[-1:]
        if unit not in units or not number.isdigit() or int(number) <= 0:
            raise ValueError(f"not a lead time: {text!r} (use e.g. 30m, 24h, 2d)")
        return cls(text, timedelta(**{units[unit]: int(number)}))


def parse_leads(texts: Iterable[str]) -> tuple[Lead, ...]:
    """Lead times, shortest first, each once."""
    leads = {lead.length: lead for lead in map(Lead.parse, texts)}
    return tuple(sorted(leads.values(), key=lambda lead: lead.length))


@dataclass(frozen=True)
class TaskDiff:
    snapshot: Snapshot
    events: list[Event]

    @property
    def changed(self) -> bool:
        return bool(self.events)


def status_name(statuses: Mapping[int, Status], status_id: int) -> str:
    status = statuses.get(status_id)
    return status.name if status else f"#{status_id}"


def status_is_active(statuses: Mapping[int, Status], status_id: int) -> bool:
    # An unknown status counts as active: a missed overdue notice is worse than an extra one.
    status = statuses.get(status_id)
    return status.is_active if status else True


def status_has_deadline(statuses: Mapping[int, Status], status_id: int) -> bool:
    # Same reasoning as status_is_active: an unknown status keeps its deadline.
    status = statuses.get(status_id)
    return status.has_deadline if status else True


def snapshot_of(
    task: Task, statuses: Mapping[int, Status], *, overdue_for: str | None = None, reminded: tuple[str, ...] = ()
) -> Snapshot:
    return Snapshot(
        task_id=task.id,
        general=task.general,
        title=task.title,
        status=task.status,
        status_name=status_name(statuses, task.status),
        is_active=status_is_active(statuses, task.status),
        has_deadline=status_has_deadline(statuses, task.status),
        deadline=task.deadline.to_json() if task.deadline else None,
        deadline_due=task.deadline.due.timestamp() if task.deadline else None,
        project_id=task.project.id if task.project else None,
        project_title=task.project.title if task.project else None,
        importance=task.importance,
        participants=tuple(sorted(task.participant_ids())),
        overdue_for=overdue_for,
        reminded=reminded,
        owner_id=task.owner.id if task.owner else None,
        workers=tuple(p.id for p in task.workers if p.id),
        auditors=tuple(p.id for p in task.auditors if p.id),
        worker_groups=tuple(g.name for g in task.worker_groups),
        names={str(p.id): p.name for p in (*([task.owner] if task.owner else []), *task.workers, *task.auditors)
               if p.id},
    )


def _latest(actions: Sequence[Action], *, task_id: int, attr: str) -> Action | None:
    relevant = [a for a in actions if a.task_id == task_id and getattr(a, attr) is not None]
    return max(relevant, key=lambda a: (a.at, a.id), default=None)


def _event(kind: Kind, key: str, snap: Snapshot, at: datetime, actor: Action | None, payload: Payload) -> Event:
    owner = actor.owner if actor else None
    return Event(
        kind=kind,
        key=key,
        task_id=snap.task_id,
        task_general=snap.general,
        task_title=snap.title,
        occurred_at=actor.at if actor else at,
        payload=payload,
        project_id=snap.project_id,
        project_title=snap.project_title,
        importance=snap.importance,
        actor_id=owner.id if owner else None,
        actor_name=owner.name if owner else None,
        participants=snap.participants,
        action_id=actor.id if actor else None,
    )


def is_overdue_now(snap: Snapshot, now: datetime, *, planfix_says_overdue: bool = False) -> bool:
    """Whether an overdue notice is due: in a status that tracks deadlines (active and `hasDeadline`), has a
    deadline that passed (or Planfix flags it), not yet told."""
    if not snap.tracks_deadline or snap.deadline is None or snap.overdue_for == snap.deadline:
        return False
    passed = snap.deadline_due is not None and snap.deadline_due <= now.timestamp()
    return passed or planfix_says_overdue


def overdue_event(
    snap: Snapshot, now: datetime, *, planfix_says_overdue: bool = False, revision: int | None = None
) -> TaskDiff:
    """The overdue notice for a snapshot, once per deadline value; moving the deadline re-arms it.

    `revision` (the stored revision being updated) goes into the key, so a deadline moved away and back to the
    same value later is announced again rather than taken for the old notice."""
    if not is_overdue_now(snap, now, planfix_says_overdue=planfix_says_overdue):
        return TaskDiff(snap, [])
    marked = dataclasses.replace(snap, overdue_for=snap.deadline)
    key = f"{OVERDUE}:{snap.task_id}:{snap.deadline}" + (f":r{revision}" if revision is not None else "")
    # It became overdue when the deadline passed (catch-up after downtime uses this to tell old news from new).
    due = datetime.fromtimestamp(snap.deadline_due, UTC) if snap.deadline_due is not None else now
    return TaskDiff(marked, [_event(OVERDUE, key, marked, min(now, due), None, Overdue(snap.deadline))])


def _reminder_mark(lead: Lead, snap: Snapshot) -> str:
    return f"{lead.text}@{snap.deadline}"


def open_leads(snap: Snapshot, now: datetime, leads: Sequence[Lead]) -> list[Lead]:
    """The leads whose window is open now (deadline ahead, closer than the lead), shortest first."""
    if not snap.tracks_deadline or snap.deadline is None or snap.deadline_due is None:
        return []
    left = snap.deadline_due - now.timestamp()
    if left <= 0:
        return []
    return sorted((lead for lead in leads if left <= lead.length.total_seconds()), key=lambda lead: lead.length)


def mark_reminded(snap: Snapshot, leads: Iterable[Lead]) -> Snapshot:
    """Record these leads as done for the current deadline; marks for other deadline values are dropped."""
    current = {m for m in snap.reminded if m.endswith(f"@{snap.deadline}")}
    marks = tuple(sorted(current | {_reminder_mark(lead, snap) for lead in leads}))
    return snap if marks == snap.reminded else dataclasses.replace(snap, reminded=marks)


def reminder_event(snap: Snapshot, now: datetime, leads: Sequence[Lead], *, revision: int | None = None) -> TaskDiff:
    """A `reminder` when a lead window opens: once per (deadline value, lead); only the shortest open lead is
    announced (a deadline 30 minutes away gets the "1h" reminder, not also the "24h" one). Closed tasks and
    passed deadlines get none; moving the deadline re-arms every lead."""
    open_now = open_leads(snap, now, leads)
    if not open_now:
        return TaskDiff(snap, [])
    marked = mark_reminded(snap, open_now)
    lead = open_now[0]
    if _reminder_mark(lead, snap) in snap.reminded:
        return TaskDiff(marked, [])
    key = f"{REMINDER}:{snap.task_id}:{snap.deadline}:{lead.text}" + (f":r{revision}" if revision is not None else "")
    assert snap.deadline_due is not None  # open_leads checked it
    opened = datetime.fromtimestamp(snap.deadline_due, UTC) - lead.length
    return TaskDiff(marked, [_event(REMINDER, key, marked, min(now, opened), None, Reminder(lead.text, snap.deadline))])


def deadline_events(
    snap: Snapshot,
    now: datetime,
    *,
    leads: Sequence[Lead] = (),
    revision: int | None = None,
    planfix_says_overdue: bool = False,
) -> TaskDiff:
    """Everything the clock alone can cause for a stored snapshot: `overdue` and `reminder`."""
    overdue = overdue_event(snap, now, planfix_says_overdue=planfix_says_overdue, revision=revision)
    reminder = reminder_event(overdue.snapshot, now, leads, revision=revision)
    return TaskDiff(reminder.snapshot, overdue.events + reminder.events)


def baseline(task: Task, statuses: Mapping[int, Status], now: datetime, leads: Sequence[Lead] = ()) -> Snapshot:
    """First sight of a task: remember it silently; a deadline already passed counts as already told, and so
    do reminders whose window is already open."""
    snap = snapshot_of(task, statuses)
    if is_overdue_now(snap, now, planfix_says_overdue=task.is_overdue):
        snap = dataclasses.replace(snap, overdue_for=snap.deadline)
    return mark_reminded(snap, open_leads(snap, now, leads))


def origin(task: Task, actions: Sequence[Action]) -> Task:
    """The task as it was before these actions, as far as they tell: the status before its first status change,
    the deadline before its first deadline change, and no assignees if the task was created among them."""
    mine = sorted((a for a in actions if a.task_id == task.id), key=lambda a: (a.at, a.id))
    statuses = [a.status_change for a in mine if a.status_change is not None]
    # TASKCREATED carries the initial deadline as an old = new "change": not a change.
    deadlines = [a.deadline_change for a in mine if a.deadline_change is not None and a.type != CREATED]
    created = any(a.type == CREATED for a in mine)
    workers: tuple[PersonRef, ...] = () if created else task.workers
    return dataclasses.replace(
        task,
        status=statuses[0].old if statuses else task.status,
        deadline=deadlines[0].old if deadlines else task.deadline,
        workers=workers,
    )


def first_sight(
    task: Task,
    *,
    statuses: Mapping[int, Status],
    actions: Sequence[Action],
    now: datetime,
    leads: Sequence[Lead] = (),
) -> TaskDiff:
    """A task first seen in the feed after the first start (created, or shown to us, since the last poll): its
    state before the feed's actions is remembered silently, then the changes the actions made are diffed like
    any other — so a task created and moved on between two polls is not silent. With no such actions (the
    sweep's first sight, which has none) nothing is announced."""
    before = baseline(origin(task, actions), statuses, now, leads)
    return diff_task(before, 0, task, statuses=statuses, actions=actions, now=now, leads=leads)


def diff_task(
    old: Snapshot | None,
    revision: int,
    task: Task,
    *,
    statuses: Mapping[int, Status],
    actions: Sequence[Action] = (),
    now: datetime,
    leads: Sequence[Lead] = (),
) -> TaskDiff:
    """Compare the remembered snapshot (at `revision`) with the task as it is now.

    Returns the new snapshot and the events: `status` when the status id changed, `deadline` when the deadline
    was set, moved or removed, `overdue` when the (possibly new) deadline has passed. The actions only name who
    made a change; the snapshots decide whether there was one, so a missed or odd action hides nothing."""
    if old is None:
        return TaskDiff(baseline(task, statuses, now, leads), [])
    new = snapshot_of(task, statuses, overdue_for=old.overdue_for, reminded=old.reminded)
    events: list[Event] = []
    if new.status != old.status:
        actor = _latest(actions, task_id=task.id, attr="status_change")
        key = f"{STATUS}:{task.id}:{revision}:{old.status}>{new.status}"
        events.append(_event(STATUS, key, new, now, actor, StatusMove(old.status, new.status, old.status_name, new.status_name)))
    if new.deadline != old.deadline:
        actor = _latest(actions, task_id=task.id, attr="deadline_change")
        key = f"{DEADLINE}:{task.id}:{revision}:{old.deadline}>{new.deadline}"
        events.append(_event(DEADLINE, key, new, now, actor, DeadlineMove(old.deadline, new.deadline)))
        # The deadline notice already says how close it is: reminders whose window is open now are passed over.
        new = mark_reminded(new, open_leads(new, now, leads))
    for user_id in (w for w in new.workers if w not in old.workers):
        # Planfix's actions do not say who added an assignee; the task's latest action in the window is the
        # best guess (the assigner, usually), so a person who assigns themselves is not told.
        actor = _latest(actions, task_id=task.id, attr="id")
        key = f"{ASSIGNED}:{task.id}:{revision}:{user_id}"
        name = new.names.get(str(user_id)) or f"#{user_id}"
        events.append(_event(ASSIGNED, key, new, now, actor, Assigned(user_id, name)))
    # Planfix's own flag is trusted only while the deadline stands; right after a move it may be stale.
    flagged = task.is_overdue and new.deadline == old.deadline
    timed = deadline_events(new, now, leads=leads, revision=revision, planfix_says_overdue=flagged)
    return TaskDiff(timed.snapshot, events + timed.events)


class NotComment(enum.Enum):
    """Why an action is not announced as a comment."""

    SYSTEM = "a system action (its type)"
    CHANGE = "a status or deadline change (announced as such)"
    EMPTY = "no words and no files (placeholders only)"
    NO_TASK = "not on a task"


def comment_verdict(action: Action) -> NotComment | None:
    """None if the action is a comment a person wrote (text or files), else why not."""
    if not action.task_id:
        return NotComment.NO_TASK
    if action.type not in COMMENT_TYPES:
        return NotComment.SYSTEM
    if action.status_change is not None or action.deadline_change is not None:
        return NotComment.CHANGE
    if not action.files and not comment_words(action.description):
        return NotComment.EMPTY
    return None


def comment_words(description: str) -> str:
    """The visible words of Planfix HTML, placeholders ({event21}) and tags removed: empty for system text."""
    return " ".join(html.unescape(_PLACEHOLDERS.sub("", _TAGS.sub(" ", description))).split())


def comment_events(snap: Snapshot, actions: Sequence[Action]) -> list[Event]:
    """A `comment` for each comment among the actions on this snapshot's task, oldest first; the key is the
    action's id, so the same comment read twice is one event."""
    found = sorted((a for a in actions if a.task_id == snap.task_id and comment_verdict(a) is None),
                   key=lambda a: (a.at, a.id))
    return [_event(COMMENT, f"{COMMENT}:{a.task_id}:{a.id}", snap, a.at, a, Comment(a.description[:COMMENT_KEPT], a.files))
            for a in found]
