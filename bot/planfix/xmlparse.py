"""Planfix XML responses → typed models. Every byte from the network is parsed by defusedxml, never xml.etree."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import tzinfo
from typing import TypeVar
from xml.etree.ElementTree import Element  # the type only; parsing below goes through defusedxml

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from bot.planfix.dates import parse_datetime, parse_deadline
from bot.planfix.errors import PlanfixMalformedError, PlanfixTransientError, error_for_code
from bot.planfix.models import (
    Action,
    DateChange,
    Deadline,
    Page,
    PersonRef,
    ProjectRef,
    Status,
    StatusChange,
    StatusSet,
    Task,
    User,
)

T = TypeVar("T")
V = TypeVar("V")


# --- envelope -------------------------------------------------------------------------------------------------


def parse_xml(body: bytes, method: str | None = None) -> Element:
    """Parse untrusted bytes into an element tree; refuse DTDs (so entity bombs and external entities never
    expand) and map every parse failure to PlanfixTransientError."""
    try:
        # forbid_dtd: Planfix never sends a DTD, so refusing any is the cheapest complete defence.
        return SafeET.fromstring(body, forbid_dtd=True)
    except DefusedXmlException as exc:
        raise PlanfixTransientError(
            f"{method or 'response'}: refused XML with a DTD or entity declarations ({type(exc).__name__})",
            method=method,
        ) from None
    except SafeET.ParseError as exc:
        raise PlanfixTransientError(
            f"{method or 'response'}: malformed or truncated XML ({exc})", method=method
        ) from None


def parse_response(
    body: bytes, method: str | None = None, *, token_mode: bool = True, secrets: Iterable[str] = ()
) -> Element:
    """The `<response>` element of an `ok` answer; raise the mapped PlanfixError for an `error` answer.

    `token_mode` only decides what error 0012 means (bad token vs. missing session key); `secrets` are
    redacted from an error's server message before it is cut short.
    """
    root = parse_xml(body, method)
    if root.tag != "response":
        raise shape_error(f"root element is <{root.tag}>, not <response>", method)
    status = (root.get("status") or "").strip()
    if status == "ok":
        return root
    if status == "error":
        code = text(root, "code")
        if not code:
            raise shape_error("error response without <code>", method)
        raise error_for_code(code, method, message=text(root, "message") or None, token_mode=token_mode,
                             secrets=secrets)
    raise shape_error(f"response status is {status[:20]!r}", method)


def shape_error(detail: str, method: str | None = None) -> PlanfixTransientError:
    """The error for a well-formed response that does not look like Planfix's documented shape."""
    prefix = f"{method}: " if method else ""
    return PlanfixTransientError(f"{prefix}unexpected response shape: {detail}", method=method)


def child(el: Element, tag: str) -> Element:
    """The first child named `tag`; a missing one is an unexpected response shape."""
    found = el.find(tag)
    if found is None:
        raise shape_error(f"<{el.tag}> has no <{tag}>")
    return found


def parse_sid(response: Element) -> str:
    """The session key from an auth.login response."""
    sid = text(response, "sid")
    if not sid:
        raise shape_error("auth.login response without <sid>", "auth.login")
    return sid


# --- field helpers --------------------------------------------------------------------------------------------


def text(el: Element, path: str) -> str:
    """The stripped text at `path`; "" when the node is absent or empty (Planfix pads some values with
    newlines, e.g. userPic)."""
    return (el.findtext(path) or "").strip()


def _int_or_none(el: Element, path: str) -> int | None:
    raw = text(el, path)
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise shape_error(f"<{el.tag}>/{path} is not an integer: {raw[:40]!r}") from None


def _required_int(el: Element, path: str) -> int:
    value = _int_or_none(el, path)
    if value is None:
        raise shape_error(f"<{el.tag}> without <{path}>")
    return value


def _ref_id(el: Element, path: str) -> int | None:
    """An id of a referenced object; Planfix writes "no reference" as id 0."""
    return _int_or_none(el, path) or None


def _flag(el: Element, path: str, default: bool = False) -> bool:
    raw = text(el, path)
    return default if not raw else raw == "1"


def _parsed(el: Element, path: str, parse: Callable[[str, tzinfo], V | None], tz: tzinfo) -> V | None:
    """Parse a date field, turning a bad value into a shape error that names the field."""
    raw = text(el, path)
    try:
        return parse(raw, tz)
    except ValueError:
        raise shape_error(f"<{el.tag}>/{path} is not a Planfix date: {raw[:40]!r}") from None


def _person(el: Element | None) -> PersonRef | None:
    if el is None:
        return None
    person_id = _ref_id(el, "id")
    return PersonRef(id=person_id, name=text(el, "name")) if person_id else None


def _people(el: Element, path: str) -> tuple[PersonRef, ...]:
    # findall, not "one child vs many": the same code handles one, many and none (§10.6).
    return tuple(p for p in map(_person, el.findall(path)) if p is not None)


def _project(el: Element | None) -> ProjectRef | None:
    if el is None:
        return None
    project_id = _ref_id(el, "id")
    return ProjectRef(id=project_id, title=text(el, "title")) if project_id else None


# --- objects --------------------------------------------------------------------------------------------------


def parse_task(el: Element, tz: tzinfo) -> Task:
    """A `<task>` of task.get / task.getMulti / task.getList; dates are read in `tz` (the API user's zone).

    `description` stays Planfix HTML (XML-unescaped once; it may still hold HTML entities).
    """
    return Task(
        id=_required_int(el, "id"),
        general=_required_int(el, "general"),
        title=text(el, "title"),
        description=text(el, "description"),
        importance=text(el, "importance") or "AVERAGE",
        status=_int_or_none(el, "status") or 0,
        status_set=_ref_id(el, "statusSet"),
        owner=_person(el.find("owner")),
        project=_project(el.find("project")),
        deadline=_parsed(el, "endTime", parse_deadline, tz),
        begin=_parsed(el, "beginDateTime", parse_datetime, tz),
        workers=_people(el, "workers/users/user"),
        worker_groups=_people(el, "workers/groups/group"),
        members=_people(el, "members/users/user"),
        auditors=_people(el, "auditors/users/user"),
        is_overdue=_flag(el, "isOverdued"),
    )


def _status_change(el: Element | None) -> StatusChange | None:
    if el is None:
        return None
    new = _int_or_none(el, "newStatus")
    return StatusChange(old=_int_or_none(el, "oldStatus") or 0, new=new) if new is not None else None


def _date_side(el: Element, side: str, tz: tzinfo) -> Deadline | None:
    if text(el, f"{side}DateIsSet") == "0":
        return None
    return _parsed(el, f"{side}Date", parse_deadline, tz)


def _date_change(el: Element | None, tz: tzinfo) -> DateChange | None:
    if el is None:
        return None
    return DateChange(old=_date_side(el, "old", tz), new=_date_side(el, "new", tz))


def parse_action(el: Element, tz: tzinfo) -> Action:
    """An `<action>` of action.get / action.getList / action.getListByPeriod, dates read in `tz`.

    Status changes come from the `<statusChange>` node whatever the action type. Deadline changes come from
    `<taskExpectDateChanged>`; a side whose `*IsSet` is 0 or whose date is empty is None. Planfix writes those
    dates with a time even for date-only deadlines (`16-02-2018 23:59`), so they parse as exact deadlines:
    compare `.due`, not whole Deadline objects, against a task's date-only deadline. An action without a task
    (a comment on a contact) has task_id 0.
    """
    at = _parsed(el, "dateTime", parse_datetime, tz)
    if at is None:
        raise shape_error("<action> without <dateTime>")
    return Action(
        id=_required_int(el, "id"),
        type=text(el, "type"),
        task_id=_int_or_none(el, "task/id") or 0,
        at=at,
        task_title=text(el, "task/title"),
        description=text(el, "description"),
        owner=_person(el.find("owner")),
        project=_project(el.find("project")),
        status_change=_status_change(el.find("statusChange")),
        deadline_change=_date_change(el.find("taskExpectDateChanged"), tz),
        files=tuple(name for f in el.findall("files/file") if (name := text(f, "name"))),
    )


def parse_user(el: Element) -> User:
    """A `<user>` of user.get / user.getList; `timezone` is an IANA name or None."""
    return User(
        id=_required_int(el, "id"),
        name=text(el, "name"),
        general=_ref_id(el, "general"),
        last_name=text(el, "lastName"),
        login=text(el, "login"),
        email=text(el, "email"),
        role=text(el, "role"),
        status=text(el, "status"),
        timezone=text(el, "timezone") or None,
        telegram_id=text(el, "telegramId") or None,
        user_pic=text(el, "userPic"),
    )


def parse_status(el: Element, set_id: int | None) -> Status:
    """A `<taskStatus>` of taskStatus.getListOfSet; `names` maps lower-cased `<lang>` to the localised name."""
    names = {
        text(t, "lang").lower(): text(t, "name")
        for t in el.findall("texts/text")
        if text(t, "lang") and text(t, "name")
    }
    return Status(
        id=_required_int(el, "id"),
        name=text(el, "name") or next(iter(names.values()), ""),
        set_id=set_id,
        is_active=_flag(el, "isActive", default=True),
        has_deadline=_flag(el, "hasDeadline", default=True),
        names=names,
    )


def parse_status_set(el: Element) -> StatusSet:
    """A `<taskStatusSet>` of taskStatus.getSetList."""
    return StatusSet(id=_required_int(el, "id"), name=text(el, "name"))


# --- lists ----------------------------------------------------------------------------------------------------


def _count_attr(el: Element, name: str) -> int | None:
    raw = (el.get(name) or "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise shape_error(f"<{el.tag}> attribute {name}={raw[:20]!r} is not an integer") from None


def parse_page(el: Element, list_tag: str, item_tag: str, parse_item: Callable[[Element], T]) -> Page[T]:
    """A list response: `el` is the `<response>` or the list root itself (e.g. `<actions count totalCount>`).

    Attributes may come in any order or be missing (count then = number of items); an empty or self-closing
    root is an empty page.
    """
    root = el if el.tag == list_tag else child(el, list_tag)
    items: list[T] = []
    skipped: list[str] = []
    for number, item in enumerate(root.findall(item_tag), 1):
        try:
            items.append(parse_item(item))
        except PlanfixTransientError as exc:  # shape errors only: the XML itself parsed
            # One bad item never fails its page: it is left out and reported (the caller logs it).
            skipped.append(f"<{item_tag}> #{number} (id {text(item, 'id') or '?'}): {exc.message}"[:300])
    count = _count_attr(root, "count")
    return Page(items=items, count=len(items) if count is None else count, total_count=_count_attr(root, "totalCount"),
                skipped=skipped)


def parse_one_task(response: Element, tz: tzinfo) -> Task:
    """The `<task>` of task.get. A card without the documented shape is that task's problem
    (PlanfixMalformedError, skipped like an inaccessible task), not a failure of the whole request."""
    el = child(response, "task")
    try:
        return parse_task(el, tz)
    except PlanfixTransientError as exc:
        raise PlanfixMalformedError(exc.message, code=None) from None


def parse_task_page(el: Element, tz: tzinfo) -> Page[Task]:
    """`<tasks>` of task.getList / task.getMulti."""
    return parse_page(el, "tasks", "task", lambda item: parse_task(item, tz))


def parse_action_page(el: Element, tz: tzinfo) -> Page[Action]:
    """`<actions>` of action.getList / action.getListByPeriod."""
    return parse_page(el, "actions", "action", lambda item: parse_action(item, tz))


def parse_user_page(el: Element) -> Page[User]:
    """`<users>` of user.getList."""
    return parse_page(el, "users", "user", parse_user)


def parse_status_page(el: Element, set_id: int | None) -> Page[Status]:
    """`<taskStatuses>` of taskStatus.getListOfSet."""
    return parse_page(el, "taskStatuses", "taskStatus", lambda item: parse_status(item, set_id))


def parse_status_set_page(el: Element) -> Page[StatusSet]:
    """`<taskStatusSets>` of taskStatus.getSetList."""
    return parse_page(el, "taskStatusSets", "taskStatusSet", parse_status_set)

