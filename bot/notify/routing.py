"""Who gets which event: configured route chats and linked users taking part in the task, never the actor."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from bot.config import Route, UserLink
from bot.events import Event
from state.records import DeliveryRow


@dataclass(frozen=True)
class Recipient:
    chat_id: int
    reason: str  # "route" or "participant": why this chat gets the event
    quiet_hours: str | None = None


def recipients(event: Event, routes: Sequence[Route], users: Sequence[UserLink]) -> list[Recipient]:
    """Every chat that should hear about `event`, each once, routes first."""
    found: dict[int, Recipient] = {}
    for route in routes:
        if event.kind not in route.events:
            continue
        if route.projects and event.project_id not in route.projects:
            continue
        found.setdefault(route.chat_id, Recipient(route.chat_id, "route", route.quiet_hours))
    for user in users:
        # Nobody is told about their own change.
        if user.planfix_id == event.actor_id or user.planfix_id not in event.participants:
            continue
        found.setdefault(user.telegram_id, Recipient(user.telegram_id, "participant"))
    return list(found.values())


def quiet_until(now: datetime, window: str, zone: ZoneInfo) -> datetime | None:
    """If `now` falls inside the daily window "HH:MM-HH:MM" (in `zone`, may cross midnight), when it ends."""
    start_text, end_text = window.split("-")
    start, end = time.fromisoformat(start_text), time.fromisoformat(end_text)
    if start == end:
        return None
    local = now.astimezone(zone)
    today_end = datetime.combine(local.date(), end, zone)
    if start < end:
        inside = start <= local.time() < end
        return today_end if inside else None
    # Across midnight: inside either late in the evening (ends tomorrow) or early in the morning (ends today).
    if local.time() >= start:
        return datetime.combine(local.date() + timedelta(days=1), end, zone)
    if local.time() < end:
        return today_end
    return None


def deliveries(
    event: Event,
    now: datetime,
    *,
    routes: Sequence[Route],
    users: Sequence[UserLink],
    zone: ZoneInfo,
    migrated: Mapping[int, int] | None = None,
) -> list[DeliveryRow]:
    """Outbox rows for an event: one per recipient chat, deferred (never dropped) inside quiet hours."""
    migrated = migrated or {}
    rows: dict[int, DeliveryRow] = {}
    for rcpt in recipients(event, routes, users):
        chat_id = migrated.get(rcpt.chat_id, rcpt.chat_id)
        not_before = quiet_until(now, rcpt.quiet_hours, zone) if rcpt.quiet_hours else None
        rows.setdefault(chat_id, DeliveryRow(event.key, chat_id, not_before))
    return list(rows.values())
