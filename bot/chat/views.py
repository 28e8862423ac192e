"""One shape for a task whether it comes from a stored snapshot or from a live Planfix card, and its Telegram HTML:
the /task card (with the latest actions) and the one-line form used by lists. Every value is escaped and cut."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from bot.i18n import texts
from bot.notify.markup import (
    MESSAGE_LIMIT,
    NAME_LIMIT,
    escape,
    importance_line,
    number_link,
    short_title,
    task_header,
    truncate,
    utf16_len,
    visible_len,
)
from bot.notify.markup import field as _field
from bot.notify.render import deadline_after, format_deadline, planfix_html_to_telegram, relative_deadline
from bot.planfix.models import Action, Status, Task
from bot.watch.diff import Snapshot

PEOPLE_LIMIT = 600  # a task with hundreds of assignees must not crowd out the rest of the card
ACTION_LIMIT = 300  # visible units of one action's text
ACTIONS_SHOWN = 5


@dataclass(frozen=True)
class TaskView:
    """What commands show about a task. `participants` feeds `may_see`; `workers` makes "my" lists."""

    task_id: int
    general: int
    title: str
    status_name: str
    is_active: bool
    importance: str = "AVERAGE"
    project_id: int | None = None
    project_title: str | None = None
    deadline: str | None = None  # Deadline.to_json(): "YYYY-MM-DD" (date only) or ISO-8601
    deadline_due: float | None = None  # epoch seconds
    owner: str | None = None
    assignees: tuple[str, ...] = ()
    auditors: tuple[str, ...] = ()
    participants: frozenset[int] = field(default_factory=frozenset)
    workers: frozenset[int] = field(default_factory=frozenset)

    @classmethod
    def from_snapshot(cls, snap: Snapshot, statuses: Mapping[int, Status] | None = None,
                      lang: str | None = None) -> TaskView:
        """`statuses` and `lang` give the status name in the chat's language (else the stored display name)."""
        names = snap.names
        status = (statuses or {}).get(snap.status)

        def name(user_id: int) -> str:
            return names.get(str(user_id)) or f"#{user_id}"

        return cls(
            task_id=snap.task_id,
            general=snap.general,
            title=snap.title,
            status_name=status.name_in(lang) if status is not None and lang else snap.status_name,
            is_active=snap.is_active,
            importance=snap.importance,
            project_id=snap.project_id,
            project_title=snap.project_title,
            deadline=snap.deadline,
            deadline_due=snap.deadline_due if snap.has_deadline else None,
            owner=name(snap.owner_id) if snap.owner_id else None,
            assignees=tuple(name(w) for w in snap.workers) + tuple(snap.worker_groups),
            auditors=tuple(name(a) for a in snap.auditors),
            participants=frozenset(snap.participants),
            workers=frozenset(snap.workers),
        )

    @classmethod
    def from_data(cls, data: Mapping[str, Any], statuses: Mapping[int, Status] | None = None,
                  lang: str | None = None) -> TaskView:
        return cls.from_snapshot(Snapshot.from_data(data), statuses, lang)

    @classmethod
    def from_task(cls, task: Task, statuses: Mapping[int, Status], lang: str) -> TaskView:
        status = statuses.get(task.status)
        return cls(
            task_id=task.id,
            general=task.general,
            title=task.title,
            status_name=status.name_in(lang) if status else f"#{task.status}",
            is_active=status.is_active if status else True,
            importance=task.importance,
            project_id=task.project.id if task.project else None,
            project_title=task.project.title if task.project else None,
            deadline=task.deadline.to_json() if task.deadline else None,
            deadline_due=task.deadline.due.timestamp() if task.deadline and (status is None or status.has_deadline)
            else None,
            owner=task.owner.name if task.owner else None,
            assignees=tuple(p.name for p in task.workers) + tuple(g.name for g in task.worker_groups),
            auditors=tuple(p.name for p in task.auditors),
            participants=task.participant_ids(),
            workers=frozenset(p.id for p in task.workers),
        )

    def overdue(self, now: datetime) -> bool:
        return self.is_active and self.deadline_due is not None and self.deadline_due <= now.timestamp()

    def sort_key(self) -> tuple[bool, float, int]:
        """Overdue first, then by deadline, tasks without one last."""
        return (self.deadline_due is None, self.deadline_due or 0.0, self.general)


# ── actions ──────────────────────────────────────────────────────────────────────────────────────────────────


def action_data(action: Action) -> dict[str, Any]:
    """An action as JSON-safe data (the history cache keeps it like this)."""
    status, dates = action.status_change, action.deadline_change
    return {
        "id": action.id,
        "type": action.type,
        "at": action.at.isoformat(),
        "author": action.owner.name if action.owner else "",
        "description": action.description,
        "status_old": status.old if status else None,
        "status_new": status.new if status else None,
        "deadline_changed": dates is not None,
        "deadline_old": dates.old.to_json() if dates and dates.old else None,
        "deadline_new": dates.new.to_json() if dates and dates.new else None,
    }


def _action_line(data: Mapping[str, Any], *, lang: str, tz: ZoneInfo, web_url: str,
                 statuses: Mapping[int, Status]) -> str:
    words = texts(lang)
    try:
        when = datetime.fromisoformat(str(data.get("at"))).astimezone(tz).strftime("%d.%m %H:%M")
    except ValueError:
        when = ""
    parts: list[str] = []
    if data.get("status_new") is not None:
        parts.append(words["act_status"].format(
            old=_field(_status_name(data.get("status_old"), statuses, lang), NAME_LIMIT),
            new=f"<b>{_field(_status_name(data.get('status_new'), statuses, lang), NAME_LIMIT)}</b>",
        ))
    if data.get("deadline_changed") and data.get("type") != "TASKCREATED":
        old = format_deadline(data.get("deadline_old"), lang=lang, tz=tz)
        new = deadline_after(data.get("deadline_old"), data.get("deadline_new"), lang=lang, tz=tz)
        parts.append(words["act_deadline"].format(old=escape(old), new=f"<b>{escape(new)}</b>"))
    # System actions carry localisation placeholders ({log26}); the converter drops them, so only real text stays.
    text = planfix_html_to_telegram(str(data.get("description") or ""), max_len=ACTION_LIMIT, base_url=web_url)
    if text.strip():
        parts.append(text)
    if not parts:
        kind = data.get("type")
        parts.append(escape(words["act_created"] if kind == "TASKCREATED" else
                            words["act_overdue"] if kind == "TASKOVERDUED" else words["act_changed"]))
    author = _field(str(data.get("author") or ""), NAME_LIMIT)
    head = f"{escape(when)} <b>{author}</b>" if author else escape(when)
    return f"• {head}: " + "; ".join(parts)


def _status_name(status_id: Any, statuses: Mapping[int, Status], lang: str) -> str:
    status = statuses.get(status_id) if isinstance(status_id, int) else None
    return status.name_in(lang) if status else f"#{status_id}"


# ── the card ─────────────────────────────────────────────────────────────────────────────────────────────────


def render_card(
    view: TaskView,
    *,
    lang: str,
    tz: ZoneInfo,
    now: datetime,
    web_url: str,
    actions: Sequence[Mapping[str, Any]] | None,
    statuses: Mapping[int, Status] | None = None,
    note: str | None = None,
) -> str:
    """The /task card. `actions` None means the history could not be read (said so on the card)."""
    words = texts(lang)
    lines = [
        task_header("📋", view.general, view.title, web_url, lang),
        f"{words['status']}: <b>{_field(view.status_name, NAME_LIMIT)}</b>"
        + ("" if view.is_active else f" ({escape(words['closed'])})"),
        importance_line(view.importance, lang),
    ]
    if view.project_title:
        lines.append(f"{words['project']}: {_field(view.project_title, NAME_LIMIT)}")
    lines.append(f"{words['deadline']}: {deadline_text(view, lang=lang, tz=tz, now=now)}")
    if view.owner:
        lines.append(f"{words['owner']}: {_field(view.owner, NAME_LIMIT)}")
    if view.assignees:
        lines.append(f"{words['assignees']}: {_people(view.assignees, lang)}")
    if view.auditors:
        lines.append(f"{words['auditors']}: {_people(view.auditors, lang)}")
    card = "\n".join(lines)
    history: list[str] = []
    if actions is None:
        history.append(f"<i>{escape(words['history_unavailable'])}</i>")
    elif not actions:
        history.append(escape(words["no_actions"]))
    else:
        history.append(f"<b>{escape(words['recent'])}</b>")
        history += [_action_line(a, lang=lang, tz=tz, web_url=web_url, statuses=statuses or {})
                    for a in list(actions)[-ACTIONS_SHOWN:]]
    if note:
        history.append(note)
    full = card + "\n\n" + "\n".join(history)
    if visible_len(full) <= MESSAGE_LIMIT:
        return full
    return card  # the history never costs the card itself


def deadline_text(view: TaskView, *, lang: str, tz: ZoneInfo, now: datetime) -> str:
    """"05.06.2025 18:00 (in 3 hours)" / "04.06.2025 (1 day overdue)" / "not set"; escaped."""
    if not view.deadline:
        return escape(texts(lang)["not_set"])
    text = escape(format_deadline(view.deadline, lang=lang, tz=tz))
    if view.is_active and view.deadline_due is not None:
        relative = escape(relative_deadline(view.deadline_due, now, lang))
        text += f" (<b>{relative}</b>)" if view.overdue(now) else f" ({relative})"
    return text


def render_line(view: TaskView, *, lang: str, tz: ZoneInfo, now: datetime, web_url: str) -> str:
    """One task in a list: icon, linked number, title, status, deadline."""
    icon = "⏰" if view.overdue(now) else ("✔️" if not view.is_active else ("📅" if view.deadline else "•"))
    line = f"{icon} {number_link(web_url, view.general)} {short_title(view.title, lang)} · {_field(view.status_name)}"
    if view.deadline:
        line += f" — {deadline_text(view, lang=lang, tz=tz, now=now)}"
    return line


def _people(names: Sequence[str], lang: str) -> str:
    shown: list[str] = []
    used = 0
    for index, name in enumerate(names):
        name = truncate(" ".join(name.split()), NAME_LIMIT)
        if used + utf16_len(name) + 2 > PEOPLE_LIMIT:
            more = len(names) - index
            shown.append(f"+{more}")
            break
        shown.append(name)
        used += utf16_len(name) + 2
    return ", ".join(escape(n) for n in shown)
