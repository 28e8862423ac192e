"""Who gets which event: configured route chats and linked users taking part in the task, never the actor
(`assigned` goes only to the new assignee among linked users, and to routes that list it).

Quiet hours are a property of a route: inside the window a route's messages are deferred to its end (never
dropped), read in the route's own time zone; HIGH-importance tasks may bypass the window when the route says so.

Chats can also ask for more from Telegram: an `Audience` (bot/chat/audience.py) adds the chats subscribed
to the event's project or following its task — each already checked against who may see the task — and says how
long a chat's mute or a task's snooze holds a message back (deferred like quiet hours, never dropped).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from bot.config import Route, UserLink
from bot.events import ASSIGNED, Assigned, Event
from state.records import DeliveryRow

URGENT = "HIGH"


class Audience(Protocol):
    """Recipients and deferrals that come from chat preferences rather than from the config."""

    def recipients(self, event: Event) -> Iterable[int]:
        """Chat ids that asked for this event (subscriptions, follows), visibility already checked."""
        ...

    def defer_until(self, chat_id: int, event: Event, now: datetime) -> datetime | None:
        """Until when the chat holds this event back (a mute, a snooze), or None."""
        ...


@dataclass(frozen=True)
class Recipient:
    chat_id: int
    reason: str  # "route" or "participant": why this chat gets the event
    route: Route | None = None  # the route that made it a recipient (its quiet hours, zone, silence)

    @property
    def quiet_hours(self) -> str | None:
        return self.route.quiet_hours if self.route else None


def recipients(event: Event, routes: Sequence[Route], users: Sequence[UserLink]) -> list[Recipient]:
    """Every chat that should hear about `event`, each once, routes first."""
    found: dict[int, Recipient] = {}
    for route in routes:
        if event.kind not in route.events:
            continue
        if route.projects and event.project_id not in route.projects:
            continue
        found.setdefault(route.chat_id, Recipient(route.chat_id, "route", route))
    for user in users:
        # Nobody is told about their own change; an assignment is personal to the new assignee.
        if user.planfix_id == event.actor_id or user.planfix_id not in event.participants:
            continue
        if event.kind == ASSIGNED and isinstance(event.payload, Assigned) and user.planfix_id != event.payload.user_id:
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


def route_quiet_until(route: Route | None, event: Event, now: datetime, zone: ZoneInfo) -> datetime | None:
    """When a route's quiet hours let this event out (None = now); `zone` is the display zone."""
    if route is None or not route.quiet_hours:
        return None
    if route.urgent_bypasses_quiet_hours and event.importance == URGENT:
        return None
    return quiet_until(now, route.quiet_hours, ZoneInfo(route.timezone) if route.timezone else zone)


def deliveries(
    event: Event,
    now: datetime,
    *,
    routes: Sequence[Route],
    users: Sequence[UserLink],
    zone: ZoneInfo,
    migrated: Mapping[int, int] | None = None,
    audience: Audience | None = None,
) -> list[DeliveryRow]:
    """Outbox rows for an event: one per recipient chat, deferred (never dropped) inside quiet hours, a chat's
    mute or a task's snooze (`audience`, which also adds subscribed and following chats)."""
    migrated = migrated or {}
    rows: dict[int, DeliveryRow] = {}
    for rcpt in recipients(event, routes, users):
        chat_id = migrated.get(rcpt.chat_id, rcpt.chat_id)
        rows.setdefault(chat_id, DeliveryRow(event.key, chat_id, route_quiet_until(rcpt.route, event, now, zone)))
    if audience is not None:
        for wanted in audience.recipients(event):
            chat_id = migrated.get(wanted, wanted)
            route = route_of_chat(chat_id, routes, migrated)  # a route chat keeps its quiet hours
            rows.setdefault(chat_id, DeliveryRow(event.key, chat_id, route_quiet_until(route, event, now, zone)))
        for chat_id, row in list(rows.items()):
            later = audience.defer_until(chat_id, event, now)
            if later is not None and (row.not_before is None or later > row.not_before):
                rows[chat_id] = dataclasses.replace(row, not_before=later)
    return list(rows.values())


def route_of_chat(chat_id: int, routes: Sequence[Route], migrated: Mapping[int, int]) -> Route | None:
    """The route that addresses this chat, also when the chat is the new id of a migrated group."""
    for route in routes:
        if chat_id in (route.chat_id, migrated.get(route.chat_id)):
            return route
    return None


def send_time_deferral(
    routes: Sequence[Route], zone: Callable[[], ZoneInfo], migrated: Callable[[], Mapping[int, int]],
    *, audience: Audience | None = None,
) -> Callable[[int, Event, datetime], datetime | None]:
    """For the sender: a row that became due late (a retry, a restart) must not slip into quiet hours (or a mute
    or snooze set since it was queued) either."""
    quiet = [r for r in routes if r.quiet_hours]

    def defer(chat_id: int, event: Event, now: datetime) -> datetime | None:
        until = route_quiet_until(route_of_chat(chat_id, quiet, migrated()), event, now, zone()) if quiet else None
        if audience is not None:
            held = audience.defer_until(chat_id, event, now)
            if held is not None and (until is None or held > until):
                until = held
        return until

    return defer
