"""A fake Planfix XML API on loopback (PLANFIX-API.md §14): account model, XML rendering, aiohttp server."""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import dataclasses
import itertools
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TypeVar
from xml.etree.ElementTree import Element, SubElement, tostring  # building responses only
from zoneinfo import ZoneInfo

import defusedxml.ElementTree as SafeET
from aiohttp import web
from defusedxml import DefusedXmlException

from bot.clock import utc_now

Due = datetime | date | None
Item = TypeVar("Item")

DATE_FORMAT = "%d-%m-%Y"
DATETIME_FORMAT = "%d-%m-%Y %H:%M"
MAX_PAGE_SIZE = 100
API_USER_ID = 1

# The default process: (id, ru, en, is_active, has_deadline). Numeric ids are our guess (PLANFIX-API.md §6.1,
# UNCONFIRMED). As on a real account (§16), "Rejected" counts as active but Planfix tracks no deadline in it.
DEFAULT_STATUSES = (
    (1, "Новая", "New", True, True),
    (2, "В работе", "In progress", True, True),
    (3, "Завершенная", "Completed", False, False),
    (4, "Отложенная", "Postponed", True, True),
    (5, "Выполненная", "Done", False, False),
    (6, "Отклоненная", "Rejected", True, False),
    (7, "Отмененная", "Canceled", False, False),
)
DEFAULT_SET_ID = 2
FAULT_KINDS = frozenset({"http500", "http502", "hang", "hang_after", "malformed", "billion_laughs", "oversized",
                         "drop", "redirect", "http401", "http403", "http404"})
MALFORMED_FIELDS = {"general": ("general", ""), "status": ("status", "in work"), "endTime": ("endTime", "31-13-2026")}

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<response status="ok"><sid>&lol9;</sid></response>"""
TRUNCATED = b'<?xml version="1.0" encoding="UTF-8"?>\n<response status="ok">\n    <task>\n        <id>11'


# --- 1. the account model -------------------------------------------------------------------------------------


@dataclass
class FakeUser:
    id: int
    name: str
    last_name: str = ""
    login: str = ""
    email: str = ""
    timezone: str | None = None
    role: str = "USER"
    status: str = "ACTIVE"

    @property
    def full_name(self) -> str:
        return f"{self.name} {self.last_name}".strip()


@dataclass
class FakeStatus:
    id: int
    name: str
    set_id: int
    is_active: bool = True
    en_name: str | None = None
    has_deadline: bool = True  # hasDeadline: Planfix tracks deadlines in this status


@dataclass
class FakeTask:
    id: int  # internal id
    general: int  # the task number
    title: str
    created: datetime
    status: int = 1
    status_set: int = DEFAULT_SET_ID
    owner: int = API_USER_ID
    workers: tuple[int, ...] = ()
    members: tuple[int, ...] = ()
    auditors: tuple[int, ...] = ()
    project: tuple[int, str] | None = None
    deadline: Due = None
    description: str = ""  # Planfix HTML
    importance: str = "AVERAGE"
    is_overdue: bool = False


@dataclass
class FakeAction:
    id: int
    task_id: int
    task_title: str
    type: str
    at: datetime
    by: int
    description: str = ""  # Planfix HTML
    project: tuple[int, str] | None = None
    status_change: tuple[int, int] | None = None
    deadline_change: tuple[Due, Due] | None = None
    files: tuple[tuple[int, str], ...] = ()  # attached files: (id, name)


class FakeAccount:
    """The data of one Planfix account and the verbs that change it. Mutations are plain synchronous calls."""

    def __init__(
        self, *, timezone: str = "Europe/Moscow", login: str = "bot", clock: Callable[[], datetime] | None = None
    ) -> None:
        self._default_zone = timezone
        self.clock = clock or utc_now
        self.users: dict[int, FakeUser] = {}
        self.status_sets: dict[int, str] = {}
        self.statuses: dict[int, FakeStatus] = {}
        self.tasks: dict[int, FakeTask] = {}
        self.actions: list[FakeAction] = []
        # Tasks Planfix refuses one by one, and cards that break the documented shape.
        self.denied: dict[int, tuple[str, str]] = {}  # task id → (error code, "error" | "omit" in task.getMulti)
        self.malformed: dict[int, str] = {}  # task id → the field rendered wrongly (MALFORMED_FIELDS)
        # Internal ids and task numbers live in different ranges so code that mixes them up fails loudly.
        self._task_ids = itertools.count(1_128_001)
        self._generals = itertools.count(1001)
        self._generals_used: set[int] = set()  # Planfix never reuses a task number, even after deletion
        self._action_ids = itertools.count(6_379_001)
        # action.add setups (PLANFIX-API.md §16): transitions the process refuses, and whether `owner` may name
        # another user (UNCONFIRMED for a non-admin API user; `owner_refusal` = the error code and message).
        self.refused_transitions: dict[tuple[int | None, int], tuple[str, str]] = {}
        self.owner_refusal: tuple[str, str] | None = None
        # Large accounts (30,000+ tasks) must page in linear time overall: a generation counter, bumped by every
        # verb, lets list answers be computed once per state; actions keep their minute keys for bisecting.
        self.generation = 0
        self._action_minutes: list[float] = []
        self._actions_ordered = True
        self._checked = 0
        self.add_user(API_USER_ID, "Planfix", "Bot", login=login, timezone=timezone, role="ADMIN")
        self.status_sets[DEFAULT_SET_ID] = "Стандартный процесс"
        for status_id, ru, en, active, has_deadline in DEFAULT_STATUSES:
            self.add_status(status_id, ru, is_active=active, en_name=en, has_deadline=has_deadline)

    @property
    def tz(self) -> ZoneInfo:
        """The API user's zone: Planfix speaks all dates in it."""
        api_user = self.users.get(API_USER_ID)
        return ZoneInfo((api_user and api_user.timezone) or self._default_zone)

    def now(self) -> datetime:
        moment = self.clock()
        if moment.tzinfo is None:
            raise ValueError("the fake's clock must return aware datetimes")
        return moment

    def today(self) -> date:
        """Today in the API user's zone on the fake's clock: the date Planfix shows (a machine's UTC date is not)."""
        return self.now().astimezone(self.tz).date()

    def add_user(
        self,
        id: int,  # noqa: A002
        name: str,
        last_name: str = "",
        login: str = "",
        timezone: str | None = None,
        *,
        email: str = "",
        role: str = "USER",
        status: str = "ACTIVE",
    ) -> FakeUser:
        user = FakeUser(id, name, last_name, login, email, timezone, role, status)
        self.users[id] = user
        return user

    def add_status(
        self,
        id: int,  # noqa: A002
        name: str,
        *,
        set_id: int = DEFAULT_SET_ID,
        is_active: bool = True,
        en_name: str | None = None,
        has_deadline: bool = True,
    ) -> None:
        self.status_sets.setdefault(set_id, f"Процесс {set_id}")
        self.statuses[id] = FakeStatus(id, name, set_id, is_active, en_name, has_deadline)
        self.generation += 1

    def add_task(
        self,
        *,
        title: str,
        general: int | None = None,
        status: int = 1,
        owner: int | None = None,
        workers: Iterable[int] = (),
        members: Iterable[int] = (),
        auditors: Iterable[int] = (),
        project: tuple[int, str] | None = None,
        deadline: Due = None,
        description: str = "",
        importance: str = "AVERAGE",
        record_action: bool = True,
    ) -> FakeTask:
        """Create a task (owner defaults to the API user) and, like Planfix, a TASKCREATED action."""
        _check_due(deadline)
        if general in self._generals_used:
            raise ValueError(f"task number {general} already exists")
        status_info = self.statuses.get(status)
        task = FakeTask(
            id=next(self._task_ids),
            general=general if general is not None else self._next_general(),
            title=title,
            created=self.now(),
            status=status,
            status_set=status_info.set_id if status_info else DEFAULT_SET_ID,
            owner=owner if owner is not None else API_USER_ID,
            workers=tuple(workers),
            members=tuple(members),
            auditors=tuple(auditors),
            project=project,
            deadline=deadline,
            description=description,
            importance=importance,
        )
        self.tasks[task.id] = task
        self._generals_used.add(task.general)
        self.generation += 1
        if record_action:
            # Real TASKCREATED actions carry the initial deadline as an old = new change (GO fixture).
            change = (deadline, deadline) if deadline is not None else None
            self._record(task, "TASKCREATED", by=task.owner, deadline_change=change)
        return task

    def change_status(self, task_id: int, new_status: int, *, by: int, comment: str = "") -> FakeAction:
        """A person changes the status: an ACTION with <statusChange>, as in the real action.get fixture."""
        task = self.task(task_id)
        old = task.status
        task.status = new_status
        if new_status in self.statuses:
            task.status_set = self.statuses[new_status].set_id
        return self._record(task, "ACTION", by=by, description=comment, status_change=(old, new_status))

    def change_deadline(
        self, task_id: int, new: Due, *, by: int, type: str = "TASKCHANGED"  # noqa: A002
    ) -> FakeAction:
        """Move, set or remove the deadline. Real Planfix reports an edit as TASKCHANGED `{log26}` with
        <taskExpectDateChanged> (GO fixture); pass type="TASKEXPECTDATECHANGED" for that variant."""
        _check_due(new)
        task = self.task(task_id)
        old = task.deadline
        task.deadline = new
        return self._record(task, type, by=by, description="{log26}", deadline_change=(old, new))

    def add_comment(self, task_id: int, text: str, *, by: int, files: Sequence[str] = ()) -> FakeAction:
        """A comment; `text` is Planfix HTML; `files` names attached files (ids are made up)."""
        attached = tuple((161854 + n, name) for n, name in enumerate(files))
        return self._record(self.task(task_id), "ACTION", by=by, description=text, files=attached)

    def refuse_transition(self, new_status: int, *, old_status: int | None = None, code: str = "0016",
                          message: str = "Переход в этот статус запрещён процессом задачи") -> None:
        """Make action.add with taskNewStatus=new_status (from old_status, or from any) answer this error."""
        self.refused_transitions[(old_status, new_status)] = (code, message)

    def post_action(self, task_id: int, text: str, *, by: int, new_status: int | None = None) -> FakeAction:
        """What action.add does once its checks passed: a comment (Planfix HTML), optionally changing the status,
        recorded in the feed like the same change made in Planfix."""
        task = self.task(task_id)
        if new_status is None:
            return self._record(task, "ACTION", by=by, description=text)
        return self.change_status(task_id, new_status, by=by, comment=text)

    def statuses_of_set(self, set_id: int) -> list[FakeStatus]:
        return [s for s in sorted(self.statuses.values(), key=lambda s: s.id) if s.set_id == set_id]

    def mark_overdue(self, task_id: int) -> FakeAction:
        """Planfix's own overdue flag: isOverdued=1 and a TASKOVERDUED `{event21}` action by the owner."""
        task = self.task(task_id)
        task.is_overdue = True
        return self._record(task, "TASKOVERDUED", by=task.owner, description="{event21}")

    def edit_task_silently(self, task_id: int, **fields: object) -> None:
        """Change task fields without recording any action (a missed or invisible change)."""
        task = self.task(task_id)
        known = {f.name for f in dataclasses.fields(FakeTask)} - {"id"}
        unknown = set(fields) - known
        if unknown:
            raise TypeError(f"unknown task fields: {sorted(unknown)}")
        if "deadline" in fields:
            _check_due(fields["deadline"])  # type: ignore[arg-type]
        for name, value in fields.items():
            setattr(task, name, value)
        self._generals_used.add(task.general)
        self.generation += 1

    def deny_access(self, task_id: int, code: str = "3002", *, in_batch: str = "error") -> None:
        """The API user loses access to one task: task.get answers `code`; a task.getMulti naming it fails with
        `code` (in_batch="error") or silently leaves it out ("omit", PLANFIX-API.md §16); lists no longer show
        it. Its actions stay in the feed (that is how the watcher meets it)."""
        if in_batch not in ("error", "omit"):
            raise ValueError("in_batch is 'error' or 'omit'")
        self.denied[task_id] = (code, in_batch)
        self.generation += 1

    def allow_access(self, task_id: int) -> None:
        self.denied.pop(task_id, None)
        self.generation += 1

    def malform(self, task_id: int, field: str = "general") -> None:
        """Render this task's card without `general`, with a non-numeric status, or an impossible endTime."""
        if field not in MALFORMED_FIELDS:
            raise ValueError(f"choose a field from {sorted(MALFORMED_FIELDS)}")
        self.malformed[task_id] = field

    def delete_task(self, task_id: int) -> None:
        """Remove the task (task.get then answers 3001); its past actions stay in the feed."""
        del self.tasks[task_id]
        self.generation += 1

    def task(self, task_id: int) -> FakeTask:
        return self.tasks[task_id]

    def task_by_general(self, general: int) -> FakeTask | None:
        return next((t for t in self.tasks.values() if t.general == general), None)

    def person_name(self, user_id: int) -> str:
        user = self.users.get(user_id)
        return user.full_name if user else ""

    def _next_general(self) -> int:
        return next(n for n in self._generals if n not in self._generals_used)

    def _record(self, task: FakeTask, type: str, *, by: int, **details: object) -> FakeAction:  # noqa: A002
        action = FakeAction(
            id=next(self._action_ids),
            task_id=task.id,
            task_title=task.title,
            type=type,
            at=self.now(),
            by=by,
            project=task.project,
            **details,  # type: ignore[arg-type]
        )
        self.actions.append(action)
        if len(self._action_minutes) == len(self.actions) - 1:
            self._action_minutes.append(_minute(action.at).timestamp())
        self.generation += 1
        return action

    def actions_between(self, start: datetime, end: datetime) -> list[FakeAction]:
        """Actions whose minute lies in [start, end]: bisected while the feed is in time order (the clock only
        moves forward), scanned otherwise."""
        if len(self._action_minutes) != len(self.actions):  # first call, or the list was edited directly
            self._action_minutes = [_minute(a.at).timestamp() for a in self.actions]
            self._actions_ordered = all(a <= b for a, b in itertools.pairwise(self._action_minutes))
        elif self._action_minutes and self._checked < len(self._action_minutes):
            tail = self._action_minutes[max(0, self._checked - 1):]
            self._actions_ordered = self._actions_ordered and all(a <= b for a, b in itertools.pairwise(tail))
        self._checked = len(self._action_minutes)
        if not self._actions_ordered:
            return [a for a in self.actions if start <= _minute(a.at) <= end]
        keys = self._action_minutes
        low = bisect.bisect_left(keys, start.timestamp())
        high = bisect.bisect_right(keys, end.timestamp())
        return self.actions[low:high]


def _check_due(value: object) -> None:
    if isinstance(value, datetime) and value.tzinfo is None:
        raise ValueError("deadlines must be aware datetimes or dates")


# --- 2. rendering ---------------------------------------------------------------------------------------------


def _sub(parent: Element, tag: str, text: object = None) -> Element:
    element = SubElement(parent, tag)
    if text is not None:
        element.text = str(text)
    return element


def _flag(value: bool) -> str:
    return "1" if value else "0"


def format_moment(moment: datetime, tz: ZoneInfo) -> str:
    """An instant as Planfix shows it: local wall time in the API user's zone, minute resolution."""
    return moment.astimezone(tz).strftime(DATETIME_FORMAT)


def format_due(due: Due, tz: ZoneInfo, *, date_only_as_end_of_day: bool = False) -> str:
    """A deadline for `endTime` (a `date` stays date-only) or for action dates (dates become 23:59)."""
    if due is None:
        return ""
    if isinstance(due, datetime):
        return format_moment(due, tz)
    return due.strftime(DATE_FORMAT) + (" 23:59" if date_only_as_end_of_day else "")


def render_person(parent: Element, tag: str, user_id: int, account: FakeAccount) -> None:
    person = _sub(parent, tag)
    _sub(person, "id", user_id)
    _sub(person, "name", account.person_name(user_id))


def render_people(parent: Element, tag: str, user_ids: Sequence[int], account: FakeAccount) -> None:
    """`<workers><users><user>…</user></users><groups/></workers>`, the fixture's shape."""
    holder = _sub(parent, tag)
    users = _sub(holder, "users")
    for user_id in user_ids:
        render_person(users, "user", user_id, account)
    _sub(holder, "groups")


def render_project(parent: Element, project: tuple[int, str] | None) -> None:
    node = _sub(parent, "project")
    _sub(node, "id", project[0] if project else 0)
    _sub(node, "title", project[1] if project else "")


def render_task(parent: Element, task: FakeTask, account: FakeAccount, *, with_people: bool = True) -> None:
    """A `<task>` like task.get.xml; task.getList items pass with_people=False (no members/auditors there)."""
    tz = account.tz
    node = _sub(parent, "task")
    _sub(node, "id", task.id)
    _sub(node, "title", task.title)
    _sub(node, "description", task.description)  # ElementTree escapes the HTML as XML text, like Planfix
    _sub(node, "importance", task.importance)
    _sub(node, "status", task.status)
    _sub(node, "statusSet", task.status_set)
    _sub(node, "checkResult", 0)
    render_person(node, "owner", task.owner, account)
    _sub(_sub(node, "parent"), "id", 0)
    _sub(_sub(node, "template"), "id", 0)
    render_project(node, task.project)
    client = _sub(node, "client")
    _sub(client, "id", 0)
    _sub(client, "name", "")
    _sub(node, "beginDateTime", format_moment(task.created, tz))
    _sub(node, "startTime", task.created.astimezone(tz).strftime(DATE_FORMAT))
    _sub(node, "endTime", format_due(task.deadline, tz))
    _sub(node, "general", task.general)
    _sub(node, "isOverdued", _flag(task.is_overdue))
    _sub(node, "isCloseToDeadline", 0)
    _sub(node, "isNotAcceptedInTime", 0)
    _sub(node, "starred", 0)
    _sub(node, "customData")
    render_people(node, "workers", task.workers, account)
    broken = account.malformed.get(task.id)
    if broken:
        tag, value = MALFORMED_FIELDS[broken]
        bad = node.find(tag)
        assert bad is not None
        if value:
            bad.text = value
        else:
            node.remove(bad)
    if with_people:
        render_people(node, "members", task.members, account)
        render_people(node, "auditors", task.auditors, account)


def render_action(parent: Element, action: FakeAction, account: FakeAccount) -> None:
    """An `<action>` like action.get.xml."""
    tz = account.tz
    node = _sub(parent, "action")
    _sub(node, "id", action.id)
    _sub(node, "description", action.description)
    _sub(node, "type", action.type)
    if action.status_change:
        change = _sub(node, "statusChange")
        _sub(change, "oldStatus", action.status_change[0])
        _sub(change, "newStatus", action.status_change[1])
    _sub(node, "isNotRead", 0)
    _sub(node, "dateTime", format_moment(action.at, tz))
    _sub(node, "fromEmail", 0)
    task = _sub(node, "task")
    _sub(task, "id", action.task_id)
    _sub(task, "title", action.task_title)
    render_project(node, action.project)
    render_person(node, "owner", action.by, account)
    if action.deadline_change:
        old, new = action.deadline_change
        change = _sub(node, "taskExpectDateChanged")
        _sub(change, "oldDate", format_due(old, tz, date_only_as_end_of_day=True))
        _sub(change, "newDate", format_due(new, tz, date_only_as_end_of_day=True))
        _sub(change, "newDateIsSet", _flag(new is not None))
        _sub(change, "oldDateIsSet", _flag(old is not None))
    if action.files:
        files = _sub(node, "files")
        for file_id, name in action.files:
            item = _sub(files, "file")
            _sub(item, "id", file_id)
            _sub(item, "name", name)
    _sub(node, "notifiedList")


def render_user(parent: Element, user: FakeUser, account: str = "demo") -> None:
    """A `<user>` like user.get.xml (the fields a bot reads, plus the common extras)."""
    node = _sub(parent, "user")
    _sub(node, "id", user.id)
    _sub(node, "general", user.id)
    _sub(node, "name", user.name)
    _sub(node, "lastName", user.last_name)
    _sub(node, "login", user.login)
    _sub(node, "email", user.email)
    _sub(node, "role", user.role)
    _sub(node, "status", user.status)
    _sub(node, "birthdate")
    _sub(node, "timezone", user.timezone or "")
    _sub(node, "useDst", 1)
    _sub(node, "userPic", f"https://{account}.planfix.ru/?action=getuserpic&id={user.id}\n")  # the real trailing \n
    _sub(node, "isOnline", 0)
    _sub(node, "userGroups")


def render_status(parent: Element, status: FakeStatus) -> None:
    """A `<taskStatus>` of taskStatus.getListOfSet, with Ru/En texts."""
    node = _sub(parent, "taskStatus")
    _sub(node, "id", status.id)
    _sub(node, "name", status.name)
    _sub(node, "color", "#999999")
    _sub(node, "isActive", _flag(status.is_active))
    _sub(node, "hasDeadline", _flag(status.has_deadline))
    texts = _sub(node, "texts")
    for lang, name in (("Ru", status.name), ("En", status.en_name)):
        if name:
            text = _sub(texts, "text")
            _sub(text, "lang", lang)
            _sub(text, "name", name)


def list_root(parent: Element, tag: str, count: int, total: int | None) -> Element:
    # totalCount first, as in the real fixtures, so parsers cannot depend on attribute order.
    attrs = {} if total is None else {"totalCount": str(total)}
    attrs["count"] = str(count)
    return SubElement(parent, tag, attrs)


def document(status: str) -> Element:
    return Element("response", status=status)


def serialize(root: Element) -> bytes:
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + tostring(root, encoding="unicode").encode("utf-8")


def error_document(code: str, message: str | None = None) -> bytes:
    root = document("error")
    _sub(root, "code", code)
    if message:
        _sub(root, "message", message)
    return serialize(root)


# --- 3. the server --------------------------------------------------------------------------------------------


@dataclass
class RecordedRequest:
    """One request the fake received. `params` are the leaf values by path (`task/id`), secrets masked;
    `outcome` is "ok", the API error code answered, or the fault kind."""

    monotonic: float
    wall: datetime
    method: str = ""
    params: tuple[tuple[str, str], ...] = ()
    auth: str = ""  # "token" (Basic password = the token), "key" (key only: login mode), "none" (no/wrong key)
    outcome: str = "ok"

    def param(self, path: str) -> str | None:
        return next((value for key, value in self.params if key == path), None)

    def param_all(self, path: str) -> list[str]:
        return [value for key, value in self.params if key == path]


@dataclass
class _Injected:
    kind: str  # a fault kind, or "error"
    method: str | None
    times: int
    seconds: float = 0.0
    code: str = ""
    message: str | None = None
    size: int = 0


class ApiError(Exception):
    """Raised by handlers to answer `status="error"` with this code."""

    def __init__(self, code: str, message: str | None = None):
        super().__init__(code)
        self.code = code
        self.message = message


@dataclass
class _PageRequest:
    number: int
    size: int


class FakePlanfix(FakeAccount):
    """The fake server. `await start()` → URL; mutate the account between requests; `await stop()`.

    Layers: the account model (FakeAccount: data plus verbs that record the actions real Planfix records),
    rendering (render_* functions: XML shaped like the real fixtures, dates at minute resolution in the API
    user's zone, `endTime` date-only for `date` deadlines), and this class (auth, envelope, paging, handlers,
    fault/error injection, and `requests`, a log of every request for tests to assert on).

    Guesses where the real API is UNCONFIRMED: task.getMulti omits unknown ids; action.getListByPeriod bounds
    are inclusive at minute resolution; pageSize > 100 answers 0021 (`clamp_page_size = True` clamps instead);
    the per-second limit is only recorded (`enforce_rps`), or also answered with `rps_violation_code`.
    """

    def __init__(
        self,
        *,
        account: str = "demo",
        api_key: str = "test-api-key",
        token: str = "test-token",
        login: str = "bot",
        password: str = "secret",
        timezone: str = "Europe/Moscow",
        sid_ttl: float = 3600,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__(timezone=timezone, login=login, clock=clock)
        self.account = account
        self.api_key = api_key
        self.token = token
        self.login = login
        self.password = password
        self.sid_ttl = sid_ttl
        self.sessions: dict[str, datetime] = {}  # sid → expiry on the fake's clock
        self.requests: list[RecordedRequest] = []
        self.rate_limit_remaining: int | None = None
        self.enforce_rps: float | None = None
        self.rps_violation_code: str | None = None
        self.rps_violations: list[RecordedRequest] = []
        self.clamp_page_size = False
        # Paging quirks (PLANFIX-API.md §16), task.getList only: each page repeats its first row at its end;
        # totalCount is reported this much too low; a page past the end answers this code instead of an empty list.
        self.list_duplicates = False
        self.list_total_off = 0
        self.past_end_code: str | None = None
        self.ambiguous_fold = 0  # which reading of a repeated local hour a request date takes (see _date_param)
        self.forbidden_methods: set[str] = set()  # answered 0020 "function call forbidden" (a restricted token)
        self.url = ""
        self._injected: list[_Injected] = []
        self._list_cache: dict[tuple[str, str], tuple[int, list[FakeTask]]] = {}
        self._runner: web.AppRunner | None = None
        self._last_arrival: float | None = None
        self._methods: dict[str, Callable[[Element], Element]] = {
            "auth.login": self._auth_login,
            "user.get": self._user_get,
            "user.getList": self._user_get_list,
            "task.get": self._task_get,
            "task.getMulti": self._task_get_multi,
            "task.getList": self._task_get_list,
            "action.get": self._action_get,
            "action.getList": self._action_get_list,
            "action.getListByPeriod": self._action_get_list_by_period,
            "taskStatus.getSetList": self._status_set_list,
            "taskStatus.getListOfSet": self._status_list_of_set,
            "action.add": self._action_add,
        }

    # lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application()
        app.router.add_post("/xml/", self._handle)
        # A short shutdown timeout: a request stuck in a "hang" fault must not hold up stop().
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        self.url = f"http://{bound_host}:{bound_port}/xml/"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakePlanfix:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # test controls

    def inject_error(
        self, code: str, *, method: str | None = None, times: int = 1, message: str | None = None
    ) -> None:
        """Answer the next `times` matching requests with HTTP 200 + status="error" and this code."""
        self._injected.append(_Injected("error", method, times, code=code, message=message))

    def inject_fault(
        self, kind: str, *, method: str | None = None, times: int = 1, seconds: float = 0, size: int = 25_000_000
    ) -> None:
        """Break the next `times` matching requests: http500, http502, hang (sleep `seconds`, then answer),
        hang_after (do what was asked, then sleep `seconds` before answering: the change is made, the answer late),
        malformed (truncated XML), billion_laughs, oversized (`size` bytes, chunked), drop (close the socket),
        redirect (301 elsewhere), http401/http403/http404 (a wrong endpoint or a proxy in the way)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; choose from {sorted(FAULT_KINDS)}")
        self._injected.append(_Injected(kind, method, times, seconds=seconds, size=size))

    def clear_faults(self) -> None:
        """Forget every injected error and fault not yet consumed."""
        self._injected.clear()

    def expire_sessions(self) -> None:
        """Make every issued sid stale (the next login-mode request gets 0005)."""
        self.sessions = dict.fromkeys(self.sessions, datetime.min.replace(tzinfo=UTC))

    def requests_for(self, method: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == method]

    # HTTP

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        record = RecordedRequest(monotonic=time.monotonic(), wall=datetime.now(UTC))
        self.requests.append(record)
        try:
            doc = SafeET.fromstring(await request.read(), forbid_dtd=True)
        except (SafeET.ParseError, DefusedXmlException):
            return self._error_response(record, ApiError("0003"))
        record.method = doc.get("method", "")
        record.params = _summarize(doc)
        record.auth = self._auth_kind(request)
        rps_code = self._check_rps(record)

        injected = self._take_injected(record.method)
        if injected is not None:
            if injected.kind == "error":
                return self._error_response(record, ApiError(injected.code, injected.message))
            if injected.kind not in ("hang", "hang_after"):
                record.outcome = injected.kind
                return await _fault_response(injected, request)
            if injected.kind == "hang":
                await asyncio.sleep(injected.seconds)  # then answer normally; other requests go on meanwhile
        try:
            if rps_code:
                raise ApiError(rps_code)
            self._spend_budget()
            self._authenticate(request, doc)
            handler = self._methods.get(record.method)
            if handler is None:
                raise ApiError("0008")
            if record.method in self.forbidden_methods:
                raise ApiError("0020")  # before any parameter check (our guess, UNCONFIRMED)
            body = serialize(handler(doc))
        except ApiError as exc:
            return self._error_response(record, exc)
        if injected is not None and injected.kind == "hang_after":
            record.outcome = "hang_after"
            await asyncio.sleep(injected.seconds)  # done in the account; the caller waits (or dies) meanwhile
        return web.Response(body=body, content_type="application/xml", charset="utf-8", headers=self._headers())

    def _error_response(self, record: RecordedRequest, exc: ApiError) -> web.Response:
        record.outcome = exc.code
        body = error_document(exc.code, exc.message)
        # API errors travel with HTTP 200 (PLANFIX-API.md §9).
        return web.Response(body=body, content_type="application/xml", charset="utf-8", headers=self._headers())

    def _headers(self) -> dict[str, str]:
        if self.rate_limit_remaining is None:
            return {}
        return {"X-RateLimit-Remaining": str(self.rate_limit_remaining)}

    def _take_injected(self, method: str) -> _Injected | None:
        for item in self._injected:
            if item.method is None or item.method == method:
                item.times -= 1
                if item.times <= 0:
                    self._injected.remove(item)
                return item
        return None

    def _check_rps(self, record: RecordedRequest) -> str | None:
        previous, self._last_arrival = self._last_arrival, record.monotonic
        if self.enforce_rps is None or previous is None:
            return None
        if record.monotonic - previous < 1 / self.enforce_rps:
            self.rps_violations.append(record)
            return self.rps_violation_code
        return None

    def _spend_budget(self) -> None:
        if self.rate_limit_remaining is None:
            return
        if self.rate_limit_remaining <= 0:
            raise ApiError("0007")
        self.rate_limit_remaining -= 1

    def _auth_kind(self, request: web.Request) -> str:
        user, password = _basic_auth(request) or ("", "")
        if user != self.api_key:
            return "none"
        return "token" if password == self.token else "key"

    def _authenticate(self, request: web.Request, doc: Element) -> None:
        """§14: key as Basic user (0001), account (0004), then token, or a live sid in login mode."""
        credentials = _basic_auth(request)
        if credentials is None or credentials[0] != self.api_key:
            raise ApiError("0001")
        account = _text(doc, "account")
        if not account:
            raise ApiError("0009")
        if account != self.account:
            raise ApiError("0004")
        if doc.get("method") == "auth.login" or credentials[1] == self.token:
            return
        sid = _text(doc, "sid")
        if not sid:
            raise ApiError("0012")  # an unknown token, or login mode without a sid
        expiry = self.sessions.get(sid)
        if expiry is None or expiry <= self.now():
            raise ApiError("0005")

    # API methods: each takes the request document and returns the <response status="ok"> element

    def _auth_login(self, doc: Element) -> Element:
        login, password = _required(doc, "login"), _required(doc, "password")
        if (login, password) != (self.login, self.password):
            raise ApiError("1001")
        sid = secrets.token_hex(16)
        self.sessions[sid] = self.now() + timedelta(seconds=self.sid_ttl)
        root = document("ok")
        _sub(root, "sid", sid)
        return root

    def _user_get(self, doc: Element) -> Element:
        user_id = _int_param(doc, "user/id") or _int_param(doc, "user/general") or API_USER_ID
        user = self.users.get(user_id)
        if user is None:
            raise ApiError("6004")
        root = document("ok")
        render_user(root, user, self.account)
        return root

    def _user_get_list(self, doc: Element) -> Element:
        wanted = _text(doc, "status")
        users = [u for u in sorted(self.users.values(), key=lambda u: u.id) if not wanted or u.status == wanted]
        return self._paged(doc, "users", users, lambda parent, u: render_user(parent, u, self.account))

    def _task_get(self, doc: Element) -> Element:
        task = self._find_task(doc, "task")
        if task.id in self.denied:
            raise ApiError(self.denied[task.id][0])
        root = document("ok")
        render_task(root, task, self)
        return root

    def _task_get_multi(self, doc: Element) -> Element:
        ids = [int(v) for v in _texts(doc, "tasks/id")]
        generals = [int(v) for v in _texts(doc, "tasks/general")]
        if not ids and not generals:
            raise ApiError("0009")
        if len(ids) + len(generals) > MAX_PAGE_SIZE:
            raise ApiError("0021")
        # Unknown ids are left out rather than failing the batch (§16); so are denied "omit" ids, while a
        # denied "error" id fails the whole batch with its code.
        found = [self.tasks[i] for i in ids if i in self.tasks]
        found += [t for t in map(self.task_by_general, generals) if t is not None]
        for task in found:
            code, mode = self.denied.get(task.id, ("", ""))
            if mode == "error":
                raise ApiError(code)
        found = [t for t in found if t.id not in self.denied]
        root = document("ok")
        tasks = list_root(root, "tasks", len(found), None)
        for task in found:
            render_task(tasks, task, self)
        return root

    def _task_get_list(self, doc: Element) -> Element:
        # Computed once per account state and query (page 1 always recomputes), so paging is linear overall.
        key = (_text(doc, "target"), _text(doc, "filter"))
        cached = self._list_cache.get(key)
        if cached is None or cached[0] != self.generation or (_int_param(doc, "pageCurrent") or 1) == 1:
            cached = (self.generation, [t for t in sorted(self.tasks.values(), key=lambda t: t.id)
                                        if self._task_matches(t, doc) and t.id not in self.denied])
            self._list_cache = {key: cached}
        tasks = cached[1]
        return self._paged(doc, "tasks", tasks, lambda parent, t: render_task(parent, t, self, with_people=False),
                           quirks=True)

    def _task_matches(self, task: FakeTask, doc: Element) -> bool:
        target = _text(doc, "target") or "all"
        if target == "in" and API_USER_ID not in task.workers:
            return False
        if target == "out" and task.owner != API_USER_ID:
            return False
        flags = set(_text(doc, "filter").split())
        status = self.statuses.get(task.status)
        if "ACTIVE" in flags and not (status is None or status.is_active):
            return False
        if "OVERDUE" in flags and not task.is_overdue:
            return False
        people = {task.owner, *task.workers, *task.members, *task.auditors}
        return not ("MY" in flags and API_USER_ID not in people)

    def _action_get(self, doc: Element) -> Element:
        action_id = _int_param(doc, "action/id")
        if action_id is None:
            raise ApiError("0009")
        action = next((a for a in self.actions if a.id == action_id), None)
        if action is None:
            raise ApiError("4002")
        root = document("ok")
        render_action(root, action, self)
        return root

    def _action_get_list(self, doc: Element) -> Element:
        task = self._find_task(doc, "task")
        actions = [a for a in self.actions if a.task_id == task.id]
        return self._actions_page(doc, actions)

    def _action_get_list_by_period(self, doc: Element) -> Element:
        start = self._date_param(doc, "fromDate", end_of_day=False)
        end = self._date_param(doc, "toDate", end_of_day=True)
        task_id = _int_param(doc, "task/id")
        # Planfix dates have minute resolution, so compare whole minutes; both bounds inclusive (UNCONFIRMED).
        actions = [a for a in self.actions_between(start, end) if task_id is None or a.task_id == task_id]
        return self._actions_page(doc, actions)

    def _actions_page(self, doc: Element, actions: list[FakeAction]) -> Element:
        sort = _text(doc, "sort") or "desc"
        if sort not in ("asc", "desc"):
            raise ApiError("0015")
        ordered = sorted(actions, key=lambda a: (a.at, a.id), reverse=sort == "desc")
        return self._paged(doc, "actions", ordered, lambda parent, a: render_action(parent, a, self))

    def _status_set_list(self, doc: Element) -> Element:
        root = document("ok")
        sets = list_root(root, "taskStatusSets", len(self.status_sets), len(self.status_sets))
        for set_id, name in sorted(self.status_sets.items()):
            node = _sub(sets, "taskStatusSet")
            _sub(node, "id", set_id)
            _sub(node, "name", name)
        return root

    def _status_list_of_set(self, doc: Element) -> Element:
        set_id = _int_param(doc, "taskStatusSet/id")
        if set_id is None:
            raise ApiError("0009")
        members = [s for s in sorted(self.statuses.values(), key=lambda s: s.id) if s.set_id == set_id]
        root = document("ok")
        statuses = list_root(root, "taskStatuses", len(members), len(members))
        for status in members:
            render_status(statuses, status)
        return root

    def _action_add(self, doc: Element) -> Element:
        """action.add (PLANFIX-API.md §16): a comment on `<action><task>`, optionally `taskNewStatus` (a status of
        the task's set, not refused by the process) and `owner` (refused per `owner_refusal`)."""
        task = self._find_task(doc, "action/task")
        text = _text(doc, "action/description")
        new_status = _int_param(doc, "action/taskNewStatus")
        if not text and new_status is None:
            raise ApiError("0009")
        owner = _int_param(doc, "action/owner/id")
        if owner is not None and owner != API_USER_ID:
            if owner not in self.users:
                raise ApiError("6004")
            if self.owner_refusal is not None:
                raise ApiError(*self.owner_refusal)
        if new_status is not None:
            status = self.statuses.get(new_status)
            if status is None or status.set_id != task.status_set:
                raise ApiError("0015", "Статус не входит в процесс задачи")
            refusal = self.refused_transitions.get((task.status, new_status)) or self.refused_transitions.get(
                (None, new_status)
            )
            if refusal is not None:
                raise ApiError(*refusal)
        action = self.post_action(task.id, text, by=owner or API_USER_ID, new_status=new_status)
        root = document("ok")
        _sub(_sub(root, "action"), "id", action.id)
        return root

    # helpers of the methods

    def _find_task(self, doc: Element, path: str) -> FakeTask:
        """`<task><id>` or `<task><general>` (the number wins when both are given); 3001 when unknown."""
        general, task_id = _int_param(doc, f"{path}/general"), _int_param(doc, f"{path}/id")
        if general is None and task_id is None:
            raise ApiError("0009")
        task = self.task_by_general(general) if general is not None else self.tasks.get(task_id or 0)
        if task is None:
            raise ApiError("3001")
        return task

    def _date_param(self, doc: Element, path: str, *, end_of_day: bool) -> datetime:
        """A request date, a wall time in the API user's zone (PLANFIX-API.md §6.6). In the hour repeated when
        clocks go back the text names two moments; Planfix (PHP) takes the first, as `ambiguous_fold = 0`
        does — set 1 to check that a client copes with either reading. A skipped wall time moves forward."""
        raw = _required(doc, path)
        try:
            return datetime.strptime(raw, DATETIME_FORMAT).replace(tzinfo=self.tz, fold=self.ambiguous_fold)
        except ValueError:
            pass
        try:
            day = datetime.strptime(raw, DATE_FORMAT)
        except ValueError:
            raise ApiError("0015") from None
        return day.replace(hour=23, minute=59, tzinfo=self.tz) if end_of_day else day.replace(tzinfo=self.tz)

    def _page_request(self, doc: Element) -> _PageRequest:
        number = _int_param(doc, "pageCurrent")
        size = _int_param(doc, "pageSize") or MAX_PAGE_SIZE
        if size < 0 or (number is not None and number < 0):
            raise ApiError("0015")
        if size > MAX_PAGE_SIZE:
            if not self.clamp_page_size:
                raise ApiError("0021")
            size = MAX_PAGE_SIZE
        return _PageRequest(number=1 if number is None else number, size=size)

    def _paged(self, doc: Element, tag: str, items: Sequence[Item], render: Callable[[Element, Item], None],
               *, quirks: bool = False) -> Element:
        """One page of `items` under `<tag count totalCount>`; pageCurrent=0 answers the count only. `quirks`:
        apply the paging quirks (list_duplicates, list_total_off, past_end_code)."""
        page = self._page_request(doc)
        root = document("ok")
        total = max(0, len(items) - self.list_total_off) if quirks else len(items)
        if page.number == 0:
            list_root(root, tag, 0, total)
            return root
        chunk = list(items[(page.number - 1) * page.size : page.number * page.size])
        if quirks and not chunk and page.number > 1 and self.past_end_code:
            raise ApiError(self.past_end_code)
        if quirks and self.list_duplicates and chunk:
            chunk.append(chunk[0])
        holder = list_root(root, tag, len(chunk), total)
        for item in chunk:
            render(holder, item)
        return root


# --- request helpers ------------------------------------------------------------------------------------------


def _minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def _text(doc: Element, path: str) -> str:
    return (doc.findtext(path) or "").strip()


def _texts(doc: Element, path: str) -> list[str]:
    return [(e.text or "").strip() for e in doc.findall(path) if (e.text or "").strip()]


def _required(doc: Element, path: str) -> str:
    value = _text(doc, path)
    if not value:
        raise ApiError("0009")
    return value


def _int_param(doc: Element, path: str) -> int | None:
    raw = _text(doc, path)
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ApiError("0015") from None


def _summarize(doc: Element) -> tuple[tuple[str, str], ...]:
    """Leaf values by slash path, for assertions; the password and the sid are masked."""
    pairs: list[tuple[str, str]] = []

    def walk(element: Element, prefix: str) -> None:
        for node in element:
            path = f"{prefix}{node.tag}"
            if len(node):
                walk(node, f"{path}/")
            else:
                value = (node.text or "").strip()
                pairs.append((path, "***" if node.tag in ("password", "sid") and value else value))

    walk(doc, "")
    return tuple(pairs)


def _basic_auth(request: web.Request) -> tuple[str, str] | None:
    header = request.headers.get("Authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password


async def _fault_response(fault: _Injected, request: web.Request) -> web.StreamResponse:
    if fault.kind in ("http500", "http502"):
        status = 500 if fault.kind == "http500" else 502
        return web.Response(status=status, text="<html><body>Server error</body></html>", content_type="text/html")
    if fault.kind == "malformed":
        return web.Response(body=TRUNCATED, content_type="application/xml")
    if fault.kind == "billion_laughs":
        return web.Response(body=BILLION_LAUGHS, content_type="application/xml")
    if fault.kind == "redirect":
        # A wrong endpoint (http:// for https://, no trailing slash, an old host) answers with a redirect.
        raise web.HTTPMovedPermanently(location="https://api.planfix.com/xml/")
    if fault.kind in ("http401", "http403", "http404"):
        return web.Response(status=int(fault.kind[4:]), text="<html><body>Error</body></html>", content_type="text/html")
    if fault.kind == "drop":
        assert request.transport is not None
        request.transport.close()
        return web.Response()  # never delivered: the client sees the connection close
    return await _oversized_response(request, fault.size)


async def _oversized_response(request: web.Request, size: int) -> web.StreamResponse:
    """A well-formed but huge body, chunked (no Content-Length), so only a streaming limit can stop it."""
    response = web.StreamResponse(headers={"Content-Type": "application/xml"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    filler = b" " * 65536
    try:
        await response.write(b'<?xml version="1.0" encoding="UTF-8"?>\n<response status="ok">')
        for _ in range(size // len(filler) + 1):
            await response.write(filler)
        await response.write(b"</response>")
        await response.write_eof()
    except ConnectionError:
        pass  # the client gave up reading, as it should
    return response


# --- demo -----------------------------------------------------------------------------------------------------


def seed_demo(fake: FakeAccount) -> None:
    """A small believable account: three people, a project, a few tasks with history."""
    fake.add_user(2, "Анна", "Иванова", login="anna")
    fake.add_user(3, "Борис", "Петров", login="boris")
    project = (9830, "Внедрение")
    today = fake.today()
    first = fake.add_task(
        title="Настроить интеграцию",
        owner=2,
        workers=(3,),
        auditors=(1,),
        project=project,
        deadline=today + timedelta(days=3),
        description="<p>Подключить <b>toggl</b> к Планфиксу.<br/></p>",
    )
    second = fake.add_task(title="Подготовить отчёт", owner=1, workers=(2,), deadline=today - timedelta(days=1))
    fake.change_status(first.id, 2, by=3, comment="Взял в работу")
    fake.add_comment(second.id, "Черновик готов, смотрите <a href='/?action=user&amp;id=2'>Анна</a>", by=2)
    fake.mark_overdue(second.id)


async def serve(port: int = 0) -> None:
    """Run a seeded fake until cancelled, printing where it listens and how to authenticate."""
    fake = FakePlanfix()
    seed_demo(fake)
    url = await fake.start(port=port)
    print(f"fake Planfix at {url} account={fake.account} api_key={fake.api_key} token={fake.token}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await fake.stop()


if __name__ == "__main__":
    try:
        asyncio.run(serve(8081))
    except KeyboardInterrupt:
        pass
