"""Telegram HTML for events and /task cards (ru/en): every value escaped and cut, every message within 4096 units."""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Sequence
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
from bot.notify.planfix_html import planfix_html_to_telegram, truncate, utf16_len

__all__ = [
    "MESSAGE_LIMIT",
    "escape",
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

MESSAGE_LIMIT = 4096  # Telegram's limit on the text after entity parsing, in UTF-16 code units
TITLE_LIMIT = 300
NAME_LIMIT = 100  # people, groups, statuses, projects
GROUP_LINES = 12  # a coalesced message shows at most this many changes (the latest ones)
DIGEST_TITLE_LIMIT = 80
COMMENT_LIMIT = 1000  # visible units of a comment in its own notice
COMMENT_LINE_LIMIT = 200  # … and as one line of a coalesced message or a digest
FILES_LIMIT = 300  # the list of attached file names
DIGEST_BUDGET = 3800  # visible units for a digest's item lines; the rest of 4096 is header and "and N more"

TEXTS: dict[str, dict[str, str]] = {
    "ru": {
        "status": "Статус",
        "deadline": "Срок",
        "project": "Проект",
        "changed_by": "Изменил(а)",
        "not_set": "не задан",
        "overdue": "Просрочена (срок был {deadline})",
        "overdue_no_deadline": "Просрочена",
        "overdue_flag": "просрочена",
        "importance": "Важность",
        "importance_HIGH": "срочная",
        "importance_AVERAGE": "обычная",
        "owner": "Постановщик",
        "assignees": "Исполнители",
        "more": "и ещё {n}",
        "untitled": "(без названия)",
        "too_long": "Сообщение не поместилось в Telegram — подробности в задаче:",
        "reminder": "Срок через {lead}: {deadline}",
        "assigned": "Новый исполнитель",
        "reminder_soon": "Скоро срок: {deadline}",
        "earlier": "…и ещё {n} {changes} раньше",
        "digest": "Пока бот не работал: {n} {changes}",
        "burst": "Сразу {n} {changes}",
        "changes": "изменение|изменения|изменений",
        "units": "m=минуту|минуты|минут;h=час|часа|часов;d=день|дня|дней;w=неделю|недели|недель",
        "due_in": "через {n} {unit}",
        "due_late": "просрочена на {n} {unit}",
        "daily": "Задачи на {day}: просрочено {overdue}, срок сегодня {today}",
        "daily_overdue": "Просрочены",
        "daily_today": "Срок сегодня",
        "comment": "Комментарий",
        "comment_by": "{name} пишет:",
        "files": "Файлы",
    },
    "en": {
        "status": "Status",
        "deadline": "Deadline",
        "project": "Project",
        "changed_by": "Changed by",
        "not_set": "not set",
        "overdue": "Overdue (was due {deadline})",
        "overdue_no_deadline": "Overdue",
        "overdue_flag": "overdue",
        "importance": "Importance",
        "importance_HIGH": "high",
        "importance_AVERAGE": "normal",
        "owner": "Owner",
        "assignees": "Assignees",
        "more": "and {n} more",
        "untitled": "(untitled)",
        "too_long": "The message didn't fit into Telegram — see the task:",
        "reminder": "Deadline in {lead}: {deadline}",
        "assigned": "New assignee",
        "reminder_soon": "Deadline soon: {deadline}",
        "earlier": "…and {n} earlier {changes}",
        "digest": "While the bot was away: {n} {changes}",
        "burst": "{n} {changes} at once",
        "changes": "change|changes|changes",
        "units": "m=minute|minutes|minutes;h=hour|hours|hours;d=day|days|days;w=week|weeks|weeks",
        "due_in": "in {n} {unit}",
        "due_late": "{n} {unit} overdue",
        "daily": "Tasks for {day}: {overdue} overdue, {today} due today",
        "daily_overdue": "Overdue",
        "daily_today": "Due today",
        "comment": "Comment",
        "comment_by": "{name} writes:",
        "files": "Files",
    },
}
ICONS = {STATUS: "🔄", DEADLINE: "📅", OVERDUE: "⏰", REMINDER: "⏳", ASSIGNED: "👤", COMMENT: "💬", DIGEST: "🗂", DAILY: "🗓",
         "card": "📋",
         "other": "🔔"}

StatusNames = Callable[[int, str], str | None]  # (status id, language) → its name, None if unknown


def _no_names(status_id: int, lang: str) -> str | None:
    return None


_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_LEAD_PART = re.compile(r"(\d{1,6})\s*([mhdw])", re.IGNORECASE)
_TAG = re.compile(r"<[^>]*>")


def escape(value: object) -> str:
    """Text safe anywhere in Telegram HTML, attribute values included (quotes escaped too)."""
    return html.escape(str(value), quote=True)


def task_url(web_url: str, general: int) -> str:
    return f"{web_url.rstrip('/')}/task/{general}"


def render_event(event: Event, *, lang: str, tz: ZoneInfo, web_url: str, names: StatusNames = _no_names) -> str:
    """One notification about one change of one task (or a digest of many), as Telegram HTML, in `lang`: status
    names come from `names` in that language at send time."""
    lang = _lang(lang)
    texts = TEXTS[lang]
    match event.payload:
        case Digest() as digest:
            return _render_digest(digest, lang, tz, web_url, names)
        case Daily() as daily:
            return _render_daily(daily, event.occurred_at, lang, tz, web_url)
        case Comment() as comment:
            lines = _task_lines(event, texts, web_url) + _comment_lines(event, comment, texts, web_url)
            return _fit("\n".join(lines), ICONS[COMMENT], event.task_general, web_url, texts)
    icon = ICONS.get(event.kind, ICONS["other"])
    lines = _task_lines(event, texts, web_url)
    lines.append(_change_line(event, lang, tz, names))
    if event.actor_name:
        lines.append(f"{texts['changed_by']}: {_field(event.actor_name, NAME_LIMIT)}")
    return _fit("\n".join(lines), icon, event.task_general, web_url, texts)


def _task_lines(event: Event, texts: dict[str, str], web_url: str) -> list[str]:
    """The header (icon, number, linked title), the project and a HIGH importance."""
    lines = [_header(ICONS.get(event.kind, ICONS["other"]), event.task_general, event.task_title, web_url, texts)]
    if event.project_title:
        lines.append(f"{texts['project']}: {_field(event.project_title, NAME_LIMIT)}")
    if event.importance == "HIGH":
        lines.append(f"❗ {texts['importance']}: {texts['importance_HIGH']}")
    return lines


def _comment_lines(event: Event, comment: Comment, texts: dict[str, str], web_url: str) -> list[str]:
    """Who wrote it, the comment as Telegram HTML (cut), and the attached files by name."""
    lines = [escape(texts["comment_by"].format(name=truncate(" ".join((event.actor_name or "?").split()), NAME_LIMIT)))]
    body = planfix_html_to_telegram(comment.text, max_len=COMMENT_LIMIT, base_url=web_url)
    if body:
        lines.append(f"<blockquote>{body}</blockquote>")
    if comment.files:
        lines.append(f"📎 {texts['files']}: {_files(comment.files)}")
    return lines


def _files(names: Sequence[str]) -> str:
    return _field(", ".join(" ".join(n.split()) for n in names), FILES_LIMIT)


def render_events(events: Sequence[Event], *, lang: str, tz: ZoneInfo, web_url: str,
                  names: StatusNames = _no_names) -> str:
    """One message for several changes of one task that were coalesced: the task as it is now, then each change
    in order (the latest GROUP_LINES of them), with who made it when more than one person did."""
    if len(events) == 1:
        return render_event(events[0], lang=lang, tz=tz, web_url=web_url, names=names)
    if not events:
        raise ValueError("render_events needs at least one event")
    lang = _lang(lang)
    texts = TEXTS[lang]
    last = events[-1]
    kinds = {e.kind for e in events}
    icon = ICONS.get(last.kind, ICONS["other"]) if len(kinds) == 1 else ICONS["other"]
    lines = [_header(icon, last.task_general, last.task_title, web_url, texts)]
    if last.project_title:
        lines.append(f"{texts['project']}: {_field(last.project_title, NAME_LIMIT)}")
    if last.importance == "HIGH":
        lines.append(f"❗ {texts['importance']}: {texts['importance_HIGH']}")
    actors = list(dict.fromkeys(" ".join(e.actor_name.split()) for e in events if e.actor_name))
    shown = events[-GROUP_LINES:]
    if len(events) > len(shown):
        hidden = len(events) - len(shown)
        lines.append(escape(texts["earlier"].format(n=hidden, changes=_plural(hidden, texts["changes"], lang))))
    for item in shown:
        line = _change_line(item, lang, tz, names)
        if len(actors) > 1 and item.actor_name:
            line += f" — {_field(item.actor_name, NAME_LIMIT)}"
        lines.append(line)
    if len(actors) == 1:
        lines.append(f"{texts['changed_by']}: {_field(actors[0], NAME_LIMIT)}")
    return _fit("\n".join(lines), icon, last.task_general, web_url, texts)


def format_deadline(value: str | None, *, lang: str, tz: ZoneInfo) -> str:
    """Plain text for an Event deadline value (Deadline.to_json()): a date stays a date, an instant shows in tz."""
    if not value:
        return TEXTS[_lang(lang)]["not_set"]
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


# ── pieces ───────────────────────────────────────────────────────────────────────────────────────────────────


def _lang(lang: str) -> str:
    """A key of TEXTS; an unknown language falls back to English rather than failing a notification."""
    code = (lang or "").lower()
    return code if code in TEXTS else "en"


def _field(value: str, limit: int) -> str:
    """A one-line plain-text value, cut before escaping so the cut never lands inside an entity."""
    return escape(truncate(" ".join(value.split()), limit))


def _header(icon: str, general: int, title: str, web_url: str, texts: dict[str, str]) -> str:
    label = _field(title, TITLE_LIMIT) or escape(texts["untitled"])
    return f'{icon} <b>#{escape(general)}</b> <a href="{escape(task_url(web_url, general))}">{label}</a>'


def _change_line(event: Event, lang: str, tz: ZoneInfo, names: StatusNames = _no_names) -> str:
    texts = TEXTS[lang]
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
            return f"{texts['deadline']}: {_transition(format_deadline(old, lang=lang, tz=tz), format_deadline(new, lang=lang, tz=tz))}"
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
    return _field(text, NAME_LIMIT)


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
    units = dict(item.split("=") for item in TEXTS[lang]["units"].split(";"))
    return " ".join(f"{int(n)} {_plural(int(n), units[u.lower()], lang)}" for n, u in parts)


def _plural(n: int, forms: str, lang: str) -> str:
    """The word form for n: "one|few|many" (Russian rules; English uses one|many)."""
    one, few, many = forms.split("|")
    if lang == "ru":
        if n % 10 == 1 and n % 100 != 11:
            return one
        if 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14:
            return few
        return many
    return one if n == 1 else many


def _render_digest(digest: Digest, lang: str, tz: ZoneInfo, web_url: str, names: StatusNames) -> str:
    """Many changes folded into one message (a catch-up after downtime, or a burst while running): one line per
    change, newest last. The poller already split a long digest into parts that fit (digest_parts); "and N more"
    is only a safety net for items that render longer than measured."""
    texts = TEXTS[lang]
    items: list[Event] = []
    for data in digest.items:
        try:
            items.append(Event.from_json(dict(data)))
        except (TypeError, ValueError, KeyError):
            continue  # one unreadable item must not cost the whole digest
    total = max(len(digest.items), len(items))
    shown = digest.total if digest.total is not None else total  # a part's header counts the whole digest
    changes = _plural(shown, texts["changes"], lang)
    title = texts["burst" if digest.why == "burst" else "digest"].format(n=shown, changes=changes)
    if digest.parts > 1:
        title += f" ({digest.part}/{digest.parts})"
    lines = [f"{ICONS[DIGEST]} <b>{escape(title)}</b>"]
    used = 0
    for index, item in enumerate(items):
        line = _digest_line(item, lang, tz, web_url, names)
        cost = _visible_len(line) + 1
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
    texts = TEXTS[lang]
    url = escape(task_url(web_url, item.task_general))
    title = escape(truncate(" ".join(item.task_title.split()), DIGEST_TITLE_LIMIT)) or escape(texts["untitled"])
    when = escape(_when(item.occurred_at, tz))
    line = f'• {when} <a href="{url}">#{escape(item.task_general)}</a> {title}: {_change_line(item, lang, tz, names)}'
    if item.actor_name:
        line += f" — {_field(item.actor_name, NAME_LIMIT)}"
    return line


def digest_parts(events: Sequence[Event], *, web_url: str, tz: ZoneInfo) -> list[list[Event]]:
    """Consecutive runs of `events` whose digest lines fit one Telegram message in every language: where a
    digest must be split so that nothing is cut (the poller folds with this)."""
    parts: list[list[Event]] = [[]]
    used = 0
    for item in events:
        cost = max(_visible_len(_digest_line(item, lang, tz, web_url)) for lang in TEXTS) + 1
        if parts[-1] and used + cost > DIGEST_BUDGET:
            parts.append([])
            used = 0
        parts[-1].append(item)
        used += cost
    return parts


def relative_deadline(due: float, now: datetime, lang: str) -> str:
    """How far a deadline (epoch seconds) is from `now`, in words: "in 3 hours", "2 days overdue" (whole units,
    rounded down, at least 1 minute; hours up to two days, then days)."""
    lang = _lang(lang)
    texts = TEXTS[lang]
    seconds = due - now.timestamp()
    minutes = max(1, int(abs(seconds) // 60))
    if minutes < 60:
        n, unit = minutes, "m"
    elif minutes < 48 * 60:
        n, unit = minutes // 60, "h"
    else:
        n, unit = minutes // (24 * 60), "d"
    units = dict(item.split("=") for item in texts["units"].split(";"))
    key = "due_in" if seconds > 0 else "due_late"
    return texts[key].format(n=n, unit=_plural(n, units[unit], lang))


def _render_daily(daily: Daily, now: datetime, lang: str, tz: ZoneInfo, web_url: str) -> str:
    """The daily digest of one chat: its overdue tasks, then those due that day, each linked, cut at a line
    boundary with "and N more" so that it always fits. Dates in the chat's zone (the payload's)."""
    texts = TEXTS[lang]
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
            cost = _visible_len(line) + 1
            if used + cost > DIGEST_BUDGET:
                lines.append(escape(texts["more"].format(n=len(items) - shown)))
                return _fit("\n".join(lines), ICONS[DAILY], 0, web_url, texts)
            lines.append(line)
            used += cost
            shown += 1
    return _fit("\n".join(lines), ICONS[DAILY], 0, web_url, texts)


def _daily_line(item: dict, lang: str, tz: ZoneInfo, web_url: str, now: datetime) -> str:
    texts = TEXTS[lang]
    try:
        general = int(item.get("general") or 0)
    except (TypeError, ValueError):
        general = 0
    url = escape(task_url(web_url, general))
    title = escape(truncate(" ".join(str(item.get("title") or "").split()), DIGEST_TITLE_LIMIT)) or escape(texts["untitled"])
    when = escape(format_deadline(item.get("deadline"), lang=lang, tz=tz))
    due = item.get("deadline_due")
    if isinstance(due, (int, float)) and item.get("overdue"):
        when += f" ({escape(relative_deadline(float(due), now, lang))})"
    return f'• <a href="{url}">#{escape(general)}</a> {title} — {when}'


def _when(moment: datetime, tz: ZoneInfo) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(tz).strftime("%d.%m %H:%M")


def _fit(message: str, icon: str, general: int, web_url: str, texts: dict[str, str]) -> str:
    """The message if Telegram will take it, else a short one with the number and the link: something arrives."""
    if _visible_len(message) <= MESSAGE_LIMIT:
        return message
    url = escape(task_url(web_url, general))
    fallback = f"{icon} <b>#{escape(general)}</b>\n{escape(texts['too_long'])}\n<a href=\"{url}\">{url}</a>"
    if _visible_len(fallback) <= MESSAGE_LIMIT:
        return fallback
    return f"{icon} <b>#{escape(general)}</b>"


def _visible_len(message: str) -> int:
    """UTF-16 length of what Telegram will show; exact for our output, whose text never holds a raw '<'."""
    return utf16_len(html.unescape(_TAG.sub("", message)))
