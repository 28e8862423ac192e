"""Telegram HTML for events and /task cards (ru/en): every value escaped and cut, every message within 4096 units."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from bot.events import (
    ASSIGNED,
    COMMENT,
    DAILY,
    DEADLINE,
    DIGEST,
    OVERDUE,
    REMINDER,
    STATUS,
    Assigned,
    Comment,
    Daily,
    DeadlineMove,
    Digest,
    Event,
    Overdue,
    Reminder,
    StatusMove,
)
from bot.i18n import CATALOGUE, language, plural
from bot.i18n import texts as catalogue
from bot.notify.markup import (
    MESSAGE_LIMIT,
    NAME_LIMIT,
    escape,
    field,
    importance_line,
    number_link,
    short_title,
    task_header,
    task_url,
    truncate,
    utf16_len,
    visible_len,
)
from bot.notify.planfix_html import planfix_html_to_telegram

__all__ = [
    "MESSAGE_LIMIT",
    "escape",
    "deadline_after",
    "format_deadline",
    "planfix_html_to_telegram",
    "relative_deadline",
    "render_event",
    "render_events",
    "digest_parts",
    "task_url",
    "truncate",
    "utf16_len",
]

GROUP_LINES = 12  # a coalesced message shows at most this many changes (the latest ones)
COMMENT_LIMIT = 1000  # visible units of a comment in its own notice
COMMENT_LINE_LIMIT = 200  # … and as one line of a coalesced message or a digest
FILES_LIMIT = 300  # the list of attached file names
DIGEST_BUDGET = 3800  # visible units for a digest's item lines; the rest of 4096 is header and "and N more"

ICONS = {STATUS: "🔄", DEADLINE: "📅", OVERDUE: "⏰", REMINDER: "⏳", ASSIGNED: "👤", COMMENT: "💬", DIGEST: "🗂", DAILY: "🗓",
         "card": "📋",
         "other": "🔔"}

StatusNames = Callable[[int, str], str | None]  # (status id, language) → its name, None if unknown


def _no_names(status_id: int, lang: str) -> str | None:
    return None


_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_LEAD_PART = re.compile(r"(\d{1,6})\s*([mhdw])", re.IGNORECASE)


def render_event(event: Event, *, lang: str, tz: ZoneInfo, web_url: str, names: StatusNames = _no_names) -> str:
    """One notification about one change of one task (or a digest of many), as Telegram HTML, in `lang`: status
    names come from `names` in that language at send time."""
    lang = language(lang)
    texts = catalogue(lang)
    match event.payload:
        case Digest() as digest:
            return _render_digest(digest, lang, tz, web_url, names)
        case Daily() as daily:
            return _render_daily(daily, event.occurred_at, lang, tz, web_url)
        case Comment() as comment:
            lines = _task_lines(event, lang, web_url) + _comment_lines(event, comment, texts, web_url)
            return _fit("\n".join(lines), ICONS[COMMENT], event.task_general, web_url, texts)
    icon = ICONS.get(event.kind, ICONS["other"])
    lines = _task_lines(event, lang, web_url)
    lines.append(_change_line(event, lang, tz, names))
    if event.actor_name:
        lines.append(f"{texts['changed_by']}: {field(event.actor_name, NAME_LIMIT)}")
    return _fit("\n".join(lines), icon, event.task_general, web_url, texts)


def _task_lines(event: Event, lang: str, web_url: str) -> list[str]:
    """The header (icon, number, linked title), the project and a HIGH importance."""
    texts = catalogue(lang)
    lines = [task_header(ICONS.get(event.kind, ICONS["other"]), event.task_general, event.task_title, web_url, lang)]
    if event.project_title:
        lines.append(f"{texts['project']}: {field(event.project_title, NAME_LIMIT)}")
    if event.importance == "HIGH":
        lines.append(importance_line("HIGH", lang))
    return lines


def _comment_lines(event: Event, comment: Comment, texts: Mapping[str, str], web_url: str) -> list[str]:
    """Who wrote it, the comment as Telegram HTML (cut), and the attached files by name."""
    lines = [escape(texts["comment_by"].format(name=truncate(" ".join((event.actor_name or "?").split()), NAME_LIMIT)))]
    body = planfix_html_to_telegram(comment.text, max_len=COMMENT_LIMIT, base_url=web_url)
    if body:
        lines.append(f"<blockquote>{body}</blockquote>")
    if comment.files:
        lines.append(f"📎 {texts['files']}: {_files(comment.files)}")
    return lines


def _files(names: Sequence[str]) -> str:
    return field(", ".join(" ".join(n.split()) for n in names), FILES_LIMIT)


def render_events(events: Sequence[Event], *, lang: str, tz: ZoneInfo, web_url: str,
                  names: StatusNames = _no_names) -> str:
    """One message for several changes of one task that were coalesced: the task as it is now, then each change
    in order (the latest GROUP_LINES of them), with who made it when more than one person did."""
    if len(events) == 1:
        return render_event(events[0], lang=lang, tz=tz, web_url=web_url, names=names)
    if not events:
        raise ValueError("render_events needs at least one event")
    lang = language(lang)
    texts = catalogue(lang)
    last = events[-1]
    kinds = {e.kind for e in events}
    icon = ICONS.get(last.kind, ICONS["other"]) if len(kinds) == 1 else ICONS["other"]
    lines = [task_header(icon, last.task_general, last.task_title, web_url, lang)]
    if last.project_title:
        lines.append(f"{texts['project']}: {field(last.project_title, NAME_LIMIT)}")
    if last.importance == "HIGH":
        lines.append(importance_line("HIGH", lang))
    actors = list(dict.fromkeys(" ".join(e.actor_name.split()) for e in events if e.actor_name))
    shown = events[-GROUP_LINES:]
    if len(events) > len(shown):
        hidden = len(events) - len(shown)
        lines.append(escape(texts["earlier"].format(n=hidden, changes=plural(lang, "changes", hidden))))
    for item in shown:
        line = _change_line(item, lang, tz, names)
        if len(actors) > 1 and item.actor_name:
            line += f" — {field(item.actor_name, NAME_LIMIT)}"
        lines.append(line)
    if len(actors) == 1:
        lines.append(f"{texts['changed_by']}: {field(actors[0], NAME_LIMIT)}")
    return _fit("\n".join(lines), icon, last.task_general, web_url, texts)


def format_deadline(value: str | None, *, lang: str, tz: ZoneInfo) -> str:
    """Plain text for an Event deadline value (Deadline.to_json()): a date stays a date, an instant shows in tz."""
    if not value:
        return catalogue(lang)["not_set"]
    if _DATE_ONLY.match(value):
        try:
            return _date(date.fromisoformat(value))
        except ValueError:
            return value
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value  # shown as is (escaped by the caller): a wrong date beats a lost notification
    return _datetime(moment, tz)


def deadline_after(old: str | None, new: str | None, *, lang: str, tz: ZoneInfo) -> str:
    """The new side of a deadline move, plain text: a deadline taken away says so in words ("removed"/"снят")."""
    if not new and old:
        return catalogue(lang)["deadline_removed"]
    return format_deadline(new, lang=lang, tz=tz)


# ── pieces ───────────────────────────────────────────────────────────────────────────────────────────────────




def _change_line(event: Event, lang: str, tz: ZoneInfo, names: StatusNames = _no_names) -> str:
    texts = catalogue(lang)
    match event.payload:
        case Reminder(lead=lead_text, deadline=deadline):
            due = _value(format_deadline(deadline, lang=lang, tz=tz))
            lead = _lead(lead_text, lang)
            if lead is None:
                return texts["reminder_soon"].format(deadline=f"<b>{due}</b>")
            return texts["reminder"].format(lead=_value(lead), deadline=f"<b>{due}</b>")
        case Overdue(deadline=deadline):
            if not deadline:
                return texts["overdue_no_deadline"]
            return texts["overdue"].format(deadline=_value(format_deadline(deadline, lang=lang, tz=tz)))
        case DeadlineMove(old=old, new=new):
            return f"{texts['deadline']}: {_transition(format_deadline(old, lang=lang, tz=tz), deadline_after(old, new, lang=lang, tz=tz))}"
        case StatusMove() as move:
            old = _status_name(move.old, move.old_name, lang, names)
            return f"{texts['status']}: {_transition(old, _status_name(move.new, move.new_name, lang, names) or '—')}"
        case Assigned(name=name):
            return f"{texts['assigned']}: <b>{_value(name or '—')}</b>"
        case Comment(text=text, files=files):
            body = planfix_html_to_telegram(text, max_len=COMMENT_LINE_LIMIT)
            line = f"💬 {texts['comment']}: " + " ".join(body.split())  # one line: newlines inside are folded
            return line + (f" 📎 {_files(files)}" if files else "")
    return _value(str(event.kind))


def _status_name(status_id: int | None, seen: str, lang: str, names: StatusNames) -> str:
    """The status's name in the chat's language now; else the name seen when the change was detected."""
    found = names(status_id, lang) if status_id is not None else None
    return found or seen or (f"#{status_id}" if status_id is not None else "")


def _transition(old: str, new: str) -> str:
    arrow = f"{_value(old)} → " if old.strip() else ""
    return f"{arrow}<b>{_value(new)}</b>"


def _value(text: str) -> str:
    return field(text, NAME_LIMIT)


def _date(day: date) -> str:
    return day.strftime("%d.%m.%Y")


def _datetime(moment: datetime, tz: ZoneInfo) -> str:
    if moment.tzinfo is None:  # the Event contract says aware; if one slips through, UTC is the stored zone
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(tz).strftime("%d.%m.%Y %H:%M")


def _lead(text: str | None, lang: str) -> str | None:
    """A reminder's lead time ("24h", "1d", "1h30m") in words: "24 hours" / "24 часа"; other text as given."""
    compact = (text or "").replace(" ", "")
    parts = _LEAD_PART.findall(compact)
    if not parts or "".join(n + u for n, u in parts).lower() != compact.lower():
        return (text or "").strip() or None
    return " ".join(f"{int(n)} {plural(lang, 'unit_' + u.lower(), int(n))}" for n, u in parts)


def _render_digest(digest: Digest, lang: str, tz: ZoneInfo, web_url: str, names: StatusNames) -> str:
    """Many changes folded into one message (a catch-up after downtime, or a burst while running): one line per
    change, newest last. The poller already split a long digest into parts that fit (digest_parts); "and N more"
    is only a safety net for items that render longer than measured."""
    texts = catalogue(lang)
    items: list[Event] = []
    for data in digest.items:
        try:
            items.append(Event.from_json(dict(data)))
        except (TypeError, ValueError, KeyError):
            continue  # one unreadable item must not cost the whole digest
    total = max(len(digest.items), len(items))
    shown = digest.total if digest.total is not None else total  # a part's header counts the whole digest
    changes = plural(lang, "changes", shown)
    title = texts["burst" if digest.why == "burst" else "digest"].format(n=shown, changes=changes)
    if digest.parts > 1:
        title += f" ({digest.part}/{digest.parts})"
    lines = [f"{ICONS[DIGEST]} <b>{escape(title)}</b>"]
    used = 0
    for index, item in enumerate(items):
        line = _digest_line(item, lang, tz, web_url, names)
        cost = visible_len(line) + 1
        if used + cost > DIGEST_BUDGET:
            rest = total - index
            lines.append(escape(texts["more"].format(n=rest)))
            break
        lines.append(line)
        used += cost
    else:
        if total > len(items):  # unreadable items are counted, not hidden
            lines.append(escape(texts["more"].format(n=total - len(items))))
    return _fit("\n".join(lines), ICONS[DIGEST], 0, web_url, texts)


def _digest_line(item: Event, lang: str, tz: ZoneInfo, web_url: str, names: StatusNames = _no_names) -> str:
    title = short_title(item.task_title, lang)
    when = escape(_when(item.occurred_at, tz))
    line = f"• {when} {number_link(web_url, item.task_general)} {title}: {_change_line(item, lang, tz, names)}"
    if item.actor_name:
        line += f" — {field(item.actor_name, NAME_LIMIT)}"
    return line


def digest_parts(events: Sequence[Event], *, web_url: str, tz: ZoneInfo) -> list[list[Event]]:
    """Consecutive runs of `events` whose digest lines fit one Telegram message in every language: where a
    digest must be split so that nothing is cut (the poller folds with this)."""
    parts: list[list[Event]] = [[]]
    used = 0
    for item in events:
        cost = max(visible_len(_digest_line(item, lang, tz, web_url)) for lang in CATALOGUE) + 1
        if parts[-1] and used + cost > DIGEST_BUDGET:
            parts.append([])
            used = 0
        parts[-1].append(item)
        used += cost
    return parts


def relative_deadline(due: float, now: datetime, lang: str) -> str:
    """How far a deadline (epoch seconds) is from `now`, in words: "in 3 hours", "2 days overdue" (whole units,
    rounded down, at least 1 minute; hours up to two days, then days)."""
    lang = language(lang)
    texts = catalogue(lang)
    seconds = due - now.timestamp()
    minutes = max(1, int(abs(seconds) // 60))
    if minutes < 60:
        n, unit = minutes, "m"
    elif minutes < 48 * 60:
        n, unit = minutes // 60, "h"
    else:
        n, unit = minutes // (24 * 60), "d"
    key = "due_in" if seconds > 0 else "due_late"
    return texts[key].format(n=n, unit=plural(lang, "unit_" + unit, n))


def _render_daily(daily: Daily, now: datetime, lang: str, tz: ZoneInfo, web_url: str) -> str:
    """The daily digest of one chat: its overdue tasks, then those due that day, each linked, cut at a line
    boundary with "and N more" so that it always fits. Dates in the chat's zone (the payload's)."""
    texts = catalogue(lang)
    try:
        zone = ZoneInfo(daily.zone) if daily.zone else tz
    except (KeyError, ValueError):
        zone = tz
    items = [dict(item) for item in daily.items]
    overdue = [i for i in items if i.get("overdue")]
    today = [i for i in items if not i.get("overdue")]
    try:
        day = _date(date.fromisoformat(daily.day))
    except ValueError:
        day = truncate(daily.day, 20)
    header = texts["daily"].format(day=day, overdue=len(overdue), today=len(today))
    lines = [f"{ICONS[DAILY]} <b>{escape(header)}</b>"]
    used = 0
    shown = 0
    for title, group in ((texts["daily_overdue"], overdue), (texts["daily_today"], today)):
        if not group:
            continue
        lines.append(f"\n<b>{escape(title)}</b>")
        for item in group:
            line = _daily_line(item, lang, zone, web_url, now)
            cost = visible_len(line) + 1
            if used + cost > DIGEST_BUDGET:
                lines.append(escape(texts["more"].format(n=len(items) - shown)))
                return _fit("\n".join(lines), ICONS[DAILY], 0, web_url, texts)
            lines.append(line)
            used += cost
            shown += 1
    return _fit("\n".join(lines), ICONS[DAILY], 0, web_url, texts)


def _daily_line(item: dict, lang: str, tz: ZoneInfo, web_url: str, now: datetime) -> str:
    try:
        general = int(item.get("general") or 0)
    except (TypeError, ValueError):
        general = 0
    title = short_title(str(item.get("title") or ""), lang)
    when = escape(format_deadline(item.get("deadline"), lang=lang, tz=tz))
    due = item.get("deadline_due")
    if isinstance(due, (int, float)) and item.get("overdue"):
        when += f" ({escape(relative_deadline(float(due), now, lang))})"
    return f"• {number_link(web_url, general)} {title} — {when}"


def _when(moment: datetime, tz: ZoneInfo) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(tz).strftime("%d.%m %H:%M")


def _fit(message: str, icon: str, general: int, web_url: str, texts: Mapping[str, str]) -> str:
    """The message if Telegram will take it, else a short one with the number and the link: something arrives."""
    if visible_len(message) <= MESSAGE_LIMIT:
        return message
    url = escape(task_url(web_url, general))
    fallback = f"{icon} <b>#{escape(general)}</b>\n{escape(texts['too_long'])}\n<a href=\"{url}\">{url}</a>"
    if visible_len(fallback) <= MESSAGE_LIMIT:
        return fallback
    return f"{icon} <b>#{escape(general)}</b>"


